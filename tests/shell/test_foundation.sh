#!/usr/bin/env bash
# A user session: build images, boot a host, look at its ranges, load a
# live-update image, run guests, tidy up, power off.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

echo "== mkimage"
hyperv-sim mkimage --xen-version 4.18 -o "$work/xen-4.18.gz" | grep -q "wrote .*4.18" \
    || fail "mkimage 4.18 did not report what it wrote"
hyperv-sim mkimage --xen-version 4.19 -o "$work/xen-4.19.gz" >/dev/null
[ -s "$work/xen-4.18.gz" ] && [ -s "$work/xen-4.19.gz" ] || fail "mkimage wrote no image"

echo "== boot a 4G host"
hyperv-sim boot --memory 4G "$work/xen-4.18.gz" > "$work/boot.txt"
grep -q "Xen 4.18" "$work/boot.txt" || fail "boot did not say which Xen runs: $(cat "$work/boot.txt")"
[ -f "$HYPERV_SIM_DIR/ram" ] || fail "no RAM file in $HYPERV_SIM_DIR after boot"
hyperv-sim info --json > "$work/info0.json"
[ "$(json "$work/info0.json" 'j["total_memory"]')" = $((4 << 30)) ] || fail "host is not 4G"
[ "$(json "$work/info0.json" 'j["xen_version"]')" = 4.18.0 ] || fail "host does not run 4.18"

echo "== ranges"
kexec-lu ranges > "$work/ranges.txt"
grep -Eq '^liveupdate +7 ' "$work/ranges.txt" || fail "no liveupdate range: $(cat "$work/ranges.txt")"
grep -Eq '^xen +1 ' "$work/ranges.txt" || fail "no xen range: $(cat "$work/ranges.txt")"
kexec-lu ranges --json > "$work/ranges.json"
lu_start=$(json "$work/ranges.json" '[r for r in j if r["name"] == "liveupdate"][0]["start"]')
lu_size=$(json "$work/ranges.json" '[r for r in j if r["name"] == "liveupdate"][0]["size"]')
xen_start=$(json "$work/ranges.json" '[r for r in j if r["name"] == "xen"][0]["start"]')
[ "$lu_size" -eq $((64 << 20)) ] || fail "LU bootmem is $lu_size bytes, boot asked for 64M"
[ $((lu_start + lu_size)) -eq "$xen_start" ] \
    || fail "LU bootmem [$lu_start+$lu_size) does not end where Xen starts ($xen_start)"

echo "== load --dry-run, then load"
kexec-lu load --type liveupdate --dry-run "$work/xen-4.19.gz" > "$work/plan.txt"
grep -q "not loaded (--dry-run)" "$work/plan.txt" || fail "dry run does not say it loaded nothing"
grep -Eq "liveupdate=[0-9]+M@0x$(printf %x "$lu_start")" "$work/plan.txt" \
    || fail "plan does not hand xen#2 its LU bootmem: $(cat "$work/plan.txt")"
[ "$(status_of kexec-lu status --type liveupdate)" = 0 ] || fail "a dry run loaded something"
kexec-lu load --type liveupdate "$work/xen-4.19.gz" > "$work/load.txt"
grep -Eq "^result: +loaded" "$work/load.txt" || fail "load did not report loaded: $(cat "$work/load.txt")"
[ "$(status_of kexec-lu status --type liveupdate)" = 1 ] || fail "status after load is not 1 (kexec -S)"
[ "$(kexec-lu status --type liveupdate || true)" = "liveupdate image loaded" ] \
    || fail "status does not say loaded"
[ "$(status_of kexec-lu status --type crash)" = 0 ] || fail "crash status should be 0"

echo "== info"
kexec-lu info "$work/xen-4.19.gz" > "$work/info.txt"
grep -Eq "^xen version: +4\.19" "$work/info.txt" || fail "info does not show 4.19: $(cat "$work/info.txt")"
grep -Eq "^relocatable: +min 0x" "$work/info.txt" || fail "info does not show the relocatable tag"
grep -Eq "^live update: +stream versions" "$work/info.txt" || fail "info does not show LU support"

echo "== guests"
hyperv-sim info --json > "$work/free0.json"
free0=$(json "$work/free0.json" 'j["free_memory"]')
hyperv-sim create --type pv --memory 256M web >/dev/null
hyperv-sim create --type pvh --memory 128M --vcpus 2 db >/dev/null
hyperv-sim create --type hvm --memory 512M --vcpus 2 win >/dev/null
hyperv-sim info --json > "$work/free1.json"
free1=$(json "$work/free1.json" 'j["free_memory"]')
# Each guest also has two Xen pages it shares with Xen: shared info and a
# grant frame (grant table v1).
[ "$free1" -eq $((free0 - (256 + 128 + 512) * 1024 * 1024 - 3 * 2 * 4096)) ] \
    || fail "creating 896M of guests took $((free0 - free1)) bytes"
hyperv-sim list --json > "$work/list1.json"
[ "$(json "$work/list1.json" 'sorted((d["name"], d["type"], d["state"]) for d in j if d["domid"])')" \
  = "[('db', 'pvh', 'running'), ('web', 'pv', 'running'), ('win', 'hvm', 'running')]" ] \
    || fail "list does not show the three guests running: $(cat "$work/list1.json")"
out=$(hyperv-sim list -v)
grep -Eq '^win +[0-9]+ +512 +2 +[r-][b-]---- +[0-9.]+ +hvm +[0-9]+  -$' <<< "$out" || fail "list table lacks win: $out"
grep -Eq '^web +[0-9]+ +256 +[0-9]+ +[r-][b-]---- +[0-9.]+ +pv +[0-9]+  -$' <<< "$out" || fail "list table lacks web: $out"

echo "== pause / unpause"
hyperv-sim pause win >/dev/null
hyperv-sim list --json > "$work/list2.json"
[ "$(json "$work/list2.json" '[d["state"] for d in j if d["name"] == "win"][0]')" = paused ] \
    || fail "win is not paused after pause"
[ "$(json "$work/list2.json" '[d["state"] for d in j if d["name"] == "web"][0]')" = running ] \
    || fail "pausing win paused web"
hyperv-sim unpause win >/dev/null
hyperv-sim list --json > "$work/list3.json"
[ "$(json "$work/list3.json" '[d["state"] for d in j if d["name"] == "win"][0]')" = running ] \
    || fail "win is not running after unpause"

echo "== destroy"
hyperv-sim destroy db | grep -q "destroyed db" || fail "destroy did not confirm"
hyperv-sim list --json > "$work/list4.json"
[ "$(json "$work/list4.json" 'sorted(d["name"] for d in j)')" = "['Domain-0', 'web', 'win']" ] \
    || fail "db still listed after destroy"
hyperv-sim info --json > "$work/free2.json"
[ "$(json "$work/free2.json" 'j["free_memory"]')" -eq $((free1 + 128 * 1024 * 1024 + 2 * 4096)) ] \
    || fail "destroying db did not return its 128M and its two shared pages"

echo "== unload"
kexec-lu unload --type liveupdate
[ "$(status_of kexec-lu status --type liveupdate)" = 0 ] || fail "status after unload is not 0"
[ "$(kexec-lu status --type liveupdate)" = "liveupdate image not loaded" ] || fail "status text"

echo "== shutdown"
hyperv-sim shutdown | grep -q "stopped" || fail "shutdown did not confirm"
[ ! -e "$HYPERV_SIM_DIR/ram" ] || fail "RAM file survives power-off"
rc=$(status_of kexec-lu status)
[ "$rc" = 255 ] || fail "status with no hypervisor exits $rc, not 255"
err=$(kexec-lu status 2>&1 >/dev/null || true)
[ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "not one line: $err"
case "$err" in
    "kexec-lu: no hypervisor: "*) ;;
    *) fail "unclear message with no hypervisor: $err" ;;
esac
echo "all good"
