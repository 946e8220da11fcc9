#!/usr/bin/env bash
# An administrator's live update: guests of every kind keep running while
# Xen 4.18 is replaced by 4.19 and then rolled back, with verify after each.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

hyperv-sim mkimage --xen-version 4.18 -o "$work/xen-4.18.gz" >/dev/null
hyperv-sim mkimage --xen-version 4.19 -o "$work/xen-4.19.gz" >/dev/null
hyperv-sim boot --memory 4G --cmdline "liveupdate=64M dom0_mem=512M" "$work/xen-4.18.gz" >/dev/null
for cfg in "$repo"/examples/guests/*.cfg; do
    hyperv-sim create -f "$cfg" >/dev/null || fail "create -f $cfg"
done
hyperv-sim verify >/dev/null || fail "verify before the update"
hyperv-sim info --json > "$work/info0.json"
pid0=$(json "$work/info0.json" 'j["pid"]')
inc0=$(json "$work/info0.json" 'j["incarnation"]')

update() {   # update IMAGE VERSION
    kexec-lu load --type liveupdate --reuse-cmdline "$1" > "$work/load.txt" \
        || fail "load $1: $(cat "$work/load.txt")"
    [ "$(status_of kexec-lu status --type liveupdate)" = 1 ] || fail "status after load is not 1 (loaded)"
    kexec-lu exec > "$work/exec.txt" || fail "exec to $2: $(cat "$work/exec.txt")"
    grep -q "^complete: Xen .* -> $2, blackout [0-9.]* ms, 4 domains" "$work/exec.txt" \
        || fail "exec did not report completion: $(cat "$work/exec.txt")"
    grep -Eq '^  restore-pass2 +[0-9.]+ ms$' "$work/exec.txt" || fail "no restore phases shown"
    hyperv-sim verify > "$work/verify.txt" || fail "verify after the update to $2: $(cat "$work/verify.txt")"
    hyperv-sim info --json > "$work/info.json"
    [ "$(json "$work/info.json" 'j["xen_version"]')" = "$2" ] || fail "host does not run $2"
    [ "$(json "$work/info.json" 'j["pid"]')" = "$pid0" ] || fail "the hypervisor process changed"
    [ "$(json "$work/info.json" 'j["incarnation"]')" != "$inc0" ] || fail "no exec happened"
    [ "$(json "$work/info.json" '"lu-stream" in j["frames"]')" = False ] || fail "stream pages leaked"
    [ "$(status_of kexec-lu status --type liveupdate)" = 0 ] \
        || fail "the new hypervisor still has an image loaded"
}

echo "== update to 4.19"
update "$work/xen-4.19.gz" 4.19.0
rc=0; kexec-lu exec --json > "$work/again.json" 2> "$work/again.err" || rc=$?
[ "$rc" = 1 ] || fail "exec with nothing loaded exited $rc, not 1"
[ "$(wc -l < "$work/again.err")" = 1 ] && grep -q '^kexec-lu: ' "$work/again.err" \
    || fail "exec with nothing loaded: not one line: $(cat "$work/again.err")"
echo "== roll back to 4.18"
update "$work/xen-4.18.gz" 4.18.0
echo "== and forward again, right away"
update "$work/xen-4.19.gz" 4.19.0
hyperv-sim list --json > "$work/list.json"
[ "$(json "$work/list.json" 'all(d["state"] == "running" for d in j)')" = True ] || fail "a guest is not running"
echo ok
