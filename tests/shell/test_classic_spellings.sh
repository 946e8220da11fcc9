#!/usr/bin/env bash
# One administrator's scenario, typed twice on two identical hosts: once in
# the documented subcommands, once in the kexec-tools spellings a script
# written for `kexec` uses.  Boot, run guests, load the live-update image,
# ask its status, live-update, verify, load again, unload, ask again.  Both
# runs must leave the same domains in the same states, the hypervisor must
# have held the very same image, and every status question must get the same
# exit code.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

host_sub=$(mktemp -d)           # the subcommand spelling's host
host_classic=$(mktemp -d)       # the classic spelling's host
trap 'HYPERV_SIM_DIR="$host_sub" hyperv-sim shutdown >/dev/null 2>&1 || true
      HYPERV_SIM_DIR="$host_classic" hyperv-sim shutdown >/dev/null 2>&1 || true
      rm -rf "$work" "$host_sub" "$host_classic"' EXIT

hyperv-sim mkimage --xen-version 4.18 -o "$work/xen-4.18.gz" >/dev/null
hyperv-sim mkimage --xen-version 4.19 -o "$work/xen-4.19.gz" >/dev/null

# The scenario's kexec-lu steps, in each spelling.
sub_load()      { kexec-lu load --type liveupdate --reuse-cmdline "$1"; }
sub_status()    { kexec-lu status --type liveupdate; }
sub_exec()      { kexec-lu exec; }
sub_unload()    { kexec-lu unload --type liveupdate; }
classic_load()   { kexec-lu --load-live-update --reuse-cmdline "$1"; }
classic_status() { kexec-lu -S --load-live-update; }
classic_exec()   { kexec-lu --exec-live-update; }
classic_unload() { kexec-lu -u --load-live-update; }

# scenario SPELLING: run on $HYPERV_SIM_DIR, leave results in $work/SPELLING.*
scenario() {
    local s=$1 out="$work/$1"
    hyperv-sim boot --memory 4G --cmdline "liveupdate=64M dom0_mem=512M" "$work/xen-4.18.gz" >/dev/null
    for cfg in "$repo"/examples/guests/*.cfg; do
        hyperv-sim create -f "$cfg" >/dev/null || fail "$s: create -f $cfg"
    done
    hyperv-sim verify >/dev/null || fail "$s: verify before the update"
    pid0=$(hyperv-sim info --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
    codes=()
    # status, asked both in this spelling and (as an observer) in the documented one
    ask() { codes+=("$1:$(status_of "${s}_status")/$(status_of sub_status)"); }

    ask before-load
    "${s}_load" "$work/xen-4.19.gz" > "$out.load.out" 2> "$out.load.err" \
        || fail "$s: load: $(cat "$out.load.err")"
    hyperv-sim info --json > "$out.info-loaded.json"
    ask loaded
    "${s}_exec" > "$out.exec.out" 2> "$out.exec.err" || fail "$s: exec: $(cat "$out.exec.err")"
    hyperv-sim verify > "$out.verify.txt" || fail "$s: verify after the update: $(cat "$out.verify.txt")"
    hyperv-sim info --json > "$out.info-updated.json"
    [ "$(json "$out.info-updated.json" 'j["xen_version"]')" = 4.19.0 ] || fail "$s: host does not run 4.19"
    [ "$(json "$out.info-updated.json" 'j["pid"]')" = "$pid0" ] || fail "$s: the hypervisor process changed"
    ask updated
    "${s}_load" "$work/xen-4.18.gz" > /dev/null 2>&1 || fail "$s: load for the rollback"
    ask reloaded
    "${s}_unload" > "$out.unload.out" 2> "$out.unload.err" || fail "$s: unload: $(cat "$out.unload.err")"
    ask unloaded
    printf '%s\n' "${codes[@]}" > "$out.status"
    hyperv-sim list --json > "$out.list.json"
    hyperv-sim shutdown >/dev/null
}

echo "== subcommands"
HYPERV_SIM_DIR="$host_sub" scenario sub
echo "== classic spellings"
HYPERV_SIM_DIR="$host_classic" scenario classic

echo "== same result"
# Every status question got the same answer, in both spellings on both hosts.
diff "$work/sub.status" "$work/classic.status" >&2 || fail "status exit codes differ"
grep -vxE '[a-z-]+:([01])/\1' "$work/classic.status" >&2 && fail "-S and status disagree"
[ "$(tr '\n' ' ' < "$work/classic.status")" = \
  "before-load:0/0 loaded:1/1 updated:0/0 reloaded:1/1 unloaded:0/0 " ] \
    || fail "unexpected status codes: $(cat "$work/classic.status")"
# The hypervisor held the very same live-update image (placement, command
# line and bytes) after either load.
sha() { json "$1" 'j["kexec"]["liveupdate"]["sha256"]'; }
[ "$(sha "$work/sub.info-loaded.json")" = "$(sha "$work/classic.info-loaded.json")" ] \
    || fail "the two loads produced different images"
# The same domains in the same states (step counts and CPU time move; nothing else may differ).
shape='[{k: v for k, v in d.items() if k not in ("steps", "cpu_time_s", "xl_state")} for d in j]'
[ "$(json "$work/sub.list.json" "$shape")" = "$(json "$work/classic.list.json" "$shape")" ] \
    || fail "domains differ: $(json "$work/sub.list.json" "$shape") vs $(json "$work/classic.list.json" "$shape")"
[ "$(json "$work/classic.list.json" 'sorted(d["name"] for d in j)')" = \
  "['Domain-0', 'hvm-win', 'pv-web', 'pvh-cache']" ] || fail "a domain is missing"
[ "$(json "$work/classic.list.json" 'all(d["state"] == "running" for d in j)')" = True ] \
    || fail "a domain is not running"
# kexec prints nothing on success; the classic spellings neither.
for f in load.out load.err exec.out exec.err unload.out unload.err; do
    [ ! -s "$work/classic.$f" ] || fail "classic $f is not empty: $(cat "$work/classic.$f")"
done
grep -q "^complete: Xen 4.18.0 -> 4.19.0" "$work/sub.exec.out" || fail "kexec-lu exec did not report"
echo ok
