#!/usr/bin/env bash
# The defaults of a live-update tool, as an operator types the commands:
# every command means a live-update image unless -t says otherwise, a load
# carries the running hypervisor's command line (and the plan says what
# changed), a failed update says why once, and a loaded crash image is
# carried across the update.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

hyperv-sim mkimage --xen-version 4.18 -o "$work/xen-4.18.gz" >/dev/null
hyperv-sim mkimage --xen-version 4.19 -o "$work/xen-4.19.gz" >/dev/null
hyperv-sim boot --memory 2G --cmdline "liveupdate=64M dom0_mem=256M crashkernel=64M lu_quiesce_timeout=200" \
    "$work/xen-4.18.gz" >/dev/null

echo "== load, status, unload: live update by default"
kexec-lu load "$work/xen-4.19.gz" > "$work/plan.txt" || fail "load failed"
grep -Eq '^type: +liveupdate$' "$work/plan.txt" || fail "load did not stage a live update: $(cat "$work/plan.txt")"
[ "$(status_of kexec-lu status)" = 1 ] || fail "status does not say loaded"
kexec-lu unload
[ "$(status_of kexec-lu status)" = 0 ] || fail "unload left the live-update image loaded"

echo "== the running command line is carried, and the plan says what changed"
grep -Eq '^command line: +dom0_mem=256M crashkernel=64M lu_quiesce_timeout=200 liveupdate=[0-9]+M@0x[0-9a-f]+$' \
    "$work/plan.txt" || fail "xen#1's options not carried: $(grep 'command line' "$work/plan.txt")"
grep -Eq '^vs running Xen: +\+liveupdate=[0-9]+M@0x[0-9a-f]+ -liveupdate=64M$' "$work/plan.txt" \
    || fail "no change line: $(cat "$work/plan.txt")"
kexec-lu load --dry-run --command-line "dom0_mem=512M" "$work/xen-4.19.gz" > "$work/plan2.txt"
grep -Eq '^command line: +dom0_mem=512M liveupdate=' "$work/plan2.txt" || fail "--command-line did not replace it"
grep -q -- '-dom0_mem=256M' "$work/plan2.txt" || fail "the dropped option is not shown: $(cat "$work/plan2.txt")"

echo "== a crash image is carried over, and check says so first"
kexec-lu load -t crash "$work/xen-4.19.gz" >/dev/null
[ "$(status_of kexec-lu status -t crash)" = 1 ] || fail "crash image not loaded"
[ "$(status_of kexec-lu check)" = 1 ] || fail "check is ready with nothing loaded"
kexec-lu load "$work/xen-4.19.gz" >/dev/null
kexec-lu check > "$work/check.txt" || fail "check is not ready: $(cat "$work/check.txt")"
grep -Eq '^pre-flight: +ready: live update 4.18.0 -> 4.19.0$' "$work/check.txt" || fail "$(cat "$work/check.txt")"
grep -Eq '^carries: +the loaded crash image$' "$work/check.txt" || fail "$(cat "$work/check.txt")"
kexec-lu exec > "$work/exec.txt" || fail "exec failed: $(cat "$work/exec.txt")"
grep -qx '  carries the loaded crash image' "$work/exec.txt" || fail "exec did not say it carries it"
grep -qx 'crash image: carried over, still loaded' "$work/exec.txt" || fail "$(cat "$work/exec.txt")"
[ "$(status_of kexec-lu status -t crash)" = 1 ] || fail "the crash image was lost in the update"
hyperv-sim info > "$work/info.txt"
grep -q "dom0_mem=256M" "$work/info.txt" || fail "xen#2 does not run with xen#1's options"

echo "== a failed update says why, once"
hyperv-sim create --type hvm --memory 128 hvm >/dev/null
hyperv-sim pause Domain-0      # it runs the HVM guest's device model
# Until the HVM vCPU waits on an I/O request: only then can it not be paused.
for _ in $(seq 200); do
    hyperv-sim list -l > "$work/long.json"
    [ "$(json "$work/long.json" '[v["runstate"] for d in j["domains"] if d["name"] == "hvm" for v in d["vcpu_states"]]')" \
        = "['blocked (I/O)']" ] && break
    sleep 0.05
done
kexec-lu load "$work/xen-4.18.gz" >/dev/null
rc=0
kexec-lu exec > "$work/abort.out" 2> "$work/abort.err" || rc=$?
hyperv-sim unpause Domain-0
[ "$rc" = 1 ] || fail "an aborted update exits $rc, not 1"
[ "$(wc -l < "$work/abort.err")" = 1 ] || fail "not one error line: $(cat "$work/abort.err")"
grep -q "never reached a restartable boundary within 200 ms: waiting for its device model in d0 (Domain-0), which the administrator paused (unpause it and retry)" \
    "$work/abort.err" || fail "$(cat "$work/abort.err")"
if grep -q "restartable boundary" "$work/abort.out"; then fail "the reason is printed twice"; fi
echo "== xl's habits: create FILE, kexec-lu FILE"
printf 'name = "web"\ntype = "pvh"\nmemory = 64\n' > "$work/web.cfg"
out=$(hyperv-sim create "$work/web.cfg") && grep -qx 'created d[0-9]* web (pvh, 64 MiB, 1 vCPU)' <<< "$out" \
    || fail "create FILE: $out"
hyperv-sim list web >/dev/null || fail "create FILE made no domain web"
rc=0; kexec-lu "$work/xen-4.19.gz" 2> "$work/bare.err" || rc=$?
[ "$rc" = 1 ] && grep -q "no action given" "$work/bare.err" || fail "kexec-lu FILE: $(cat "$work/bare.err")"
echo "== --state-dir on kexec-lu, as on hyperv-sim"
[ "$(status_of env -u HYPERV_SIM_DIR kexec-lu status -t crash --state-dir "$HYPERV_SIM_DIR")" = 1 ] \
    || fail "kexec-lu --state-dir does not reach the host"
echo ok
