#!/usr/bin/env bash
# One voice, as an operator reads it: `hyperv-sim info` as `xl info`, `list`
# as `xl list` (plain on a terminal too), every size and machine address
# written one way, Xen's full version the same in every place an update
# shows it, and `stream dump` with nothing after its last field.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

hyperv-sim mkimage --xen-version 4.18 -o "$work/xen-4.18.gz" > "$work/mk.txt"
grep -qx "wrote $work/xen-4.18.gz (Xen 4.18.0)" "$work/mk.txt" || fail "mkimage: $(cat "$work/mk.txt")"
hyperv-sim mkimage --xen-version 4.19 -o "$work/xen-4.19.gz" >/dev/null
hyperv-sim boot --memory 2G --cmdline "liveupdate=64M dom0_mem=256M crashkernel=64M" \
    "$work/xen-4.18.gz" > "$work/boot.txt"
hyperv-sim create --memory 128M web1 >/dev/null

echo "== info as xl info"
hyperv-sim info > "$work/info.txt"
# xl's layout: the key padded to 23 columns, then ": ".
bad=$(grep -Ev '^[a-z_0-9]+ *: ' "$work/info.txt" || true)
[ -z "$bad" ] || fail "not key : value: $bad"
bad=$(grep -Ev '^.{23}: ' "$work/info.txt" || true)
[ -z "$bad" ] || fail "key not padded to 23 columns: $bad"
keys=$(cut -d' ' -f1 "$work/info.txt" | tr '\n' ' ')
case "$keys" in
    "host release version machine nr_cpus max_cpu_id nr_nodes total_memory free_memory xen_major xen_minor xen_extra xen_version xen_pagesize xen_commandline "*) ;;
    *) fail "xl's keys, in xl's order, come first: $keys" ;;
esac
[ "$(hyperv-sim info total_memory)" = 2048 ] || fail "total_memory is not 2048 MiB: $(hyperv-sim info total_memory)"
[ "$(hyperv-sim info xen_version)" = 4.18.0 ] || fail "xen_version: $(hyperv-sim info xen_version)"
[ "$(hyperv-sim info xen_extra)" = .0 ] || fail "xen_extra: $(hyperv-sim info xen_extra)"
[ "$(hyperv-sim info xen_commandline)" = "liveupdate=64M dom0_mem=256M crashkernel=64M" ] \
    || fail "xen_commandline: $(hyperv-sim info xen_commandline)"
[ "$(hyperv-sim info host)" = "$(uname -n)" ] || fail "host is not dom0's node name"
[ "$(hyperv-sim info crash_region | sed 's/.*(\(.*\))/\1/')" = "64 MiB" ] || fail "crash_region"
rc=0; hyperv-sim info no_such_key > "$work/out" 2> "$work/err" || rc=$?
[ "$rc" = 1 ] && [ ! -s "$work/out" ] && [ "$(wc -l < "$work/err")" = 1 ] \
    && grep -q "no such info key: no_such_key" "$work/err" || fail "an unknown key: rc $rc, $(cat "$work/err")"

echo "== list as xl list, on a terminal too"
xl_head=$(printf '%-40s %5s %5s %5s\tState\tTime(s)' Name ID Mem VCPUs)
# A pseudo-terminal, as a person at a shell has.
python3 -c 'import os, pty, sys; pty.spawn(sys.argv[1:])' hyperv-sim list < /dev/null | tr -d '\r' > "$work/tty.txt"
[ "$(head -1 "$work/tty.txt")" = "$xl_head" ] || fail "list on a terminal: $(head -2 "$work/tty.txt")"
hyperv-sim list > "$work/pipe.txt"
diff <(sed 's/ *[0-9.]*$//' "$work/tty.txt") <(sed 's/ *[0-9.]*$//' "$work/pipe.txt") >/dev/null \
    || fail "list differs between a terminal and a pipe"
grep -Eq '^web1 {36} +1 +128 +1 +[-rbp]{6} +[0-9]+\.[0-9]$' "$work/pipe.txt" \
    || fail "web1 not in xl's columns: $(cat "$work/pipe.txt")"

echo "== sizes and machine addresses, one way"
kexec-lu load --dry-run "$work/xen-4.19.gz" > "$work/plan.txt"
kexec-lu ranges > "$work/ranges.txt"
kexec-lu info "$work/xen-4.19.gz" > "$work/imginfo.txt"
kexec-lu map --width 40 "$work/xen-4.19.gz" > "$work/map.txt"
for f in boot plan ranges info imginfo map; do
    # What the operator would type back keeps Xen's syntax: drop those words.
    words=$(sed -E 's/(liveupdate|dom0_mem|crashkernel)=[^ ]*//g' "$work/$f.txt")
    odd=$(grep -oE '\b[0-9]+(\.[0-9]+)?[KMGT]i?B?\b' <<< "$words" || true)
    [ -z "$odd" ] || fail "$f writes a size Xen's way: $odd"
    odd=$(grep -oE '0x[0-9a-f]+' <<< "$words" | grep -Ev '^0x[0-9a-f]{12}$' || true)
    # The multiboot2 header's file offset is no machine address.
    [ "$f" != imginfo ] || odd=$(grep -v '^0x[0-9a-f]\{1,5\}$' <<< "$odd" || true)
    [ -z "$odd" ] || fail "$f writes a machine address in another width: $odd"
done
grep -Eq '^xen#2 LU bootmem: +0x[0-9a-f]{12}-0x[0-9a-f]{12} \(64 MiB\)$' "$work/plan.txt" \
    || fail "the plan's bootmem: $(grep bootmem "$work/plan.txt")"
grep -Eq '^memory: +2 GiB$' "$work/boot.txt" || fail "boot's memory: $(cat "$work/boot.txt")"

echo "== one version string"
kexec-lu load "$work/xen-4.19.gz" >/dev/null
kexec-lu exec > "$work/exec.txt" || fail "exec: $(cat "$work/exec.txt")"
grep -qx "live update 4.18.0 -> 4.19.0" "$work/exec.txt" || fail "exec's first line: $(head -1 "$work/exec.txt")"
grep -Eq '^complete: Xen 4\.18\.0 -> 4\.19\.0, blackout [0-9.]+ ms, 2 domains, [0-9.]+ KiB stream$' \
    "$work/exec.txt" || fail "exec's last line: $(tail -1 "$work/exec.txt")"
hyperv-sim history > "$work/history.txt"
grep -Eq ' 4\.18\.0 +4\.19\.0 +complete ' "$work/history.txt" || fail "history: $(cat "$work/history.txt")"
hyperv-sim dmesg > "$work/dmesg.txt"
grep -q "live update from Xen 4.18.0 complete" "$work/dmesg.txt" || fail "dmesg does not say 4.18.0"
grep -q "Xen version 4.19.0 (hyperv-sim)" "$work/dmesg.txt" || fail "dmesg does not say 4.19.0"
[ "$(hyperv-sim info xen_version)" = 4.19.0 ] || fail "info after the update: $(hyperv-sim info xen_version)"

echo "== stream dump: nothing after the last field"
hyperv-sim stream save -o "$work/s.bin" >/dev/null
hyperv-sim stream dump "$work/s.bin" > "$work/dump.txt"
! grep -n ' $' "$work/dump.txt" || fail "stream dump ends lines with blanks"
grep -Eq '^0x00000018  LU_VERSION +32  xen 4\.19\.0, format 2, 2 domains$' "$work/dump.txt" \
    || fail "LU_VERSION: $(grep LU_VERSION "$work/dump.txt")"
echo "ok"
