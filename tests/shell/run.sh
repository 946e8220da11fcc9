#!/usr/bin/env bash
# Run every tests/shell/test_*.sh, each in a fresh HYPERV_SIM_DIR.
#
#   PATH=.venv/bin:$PATH bash tests/shell/run.sh [test_foo.sh ...]
#
# Prints "ok NAME" or "FAIL NAME" (and the failing script's output) per
# script, then "N passed, M failed"; exits non-zero if any failed.  Every host
# a script left running is shut down, also when this runner is interrupted.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export KEXEC_LU_XEN_CACHE="${KEXEC_LU_XEN_CACHE:-$repo/.cache/xen}"

for tool in kexec-lu hyperv-sim; do
    if ! command -v "$tool" >/dev/null; then
        echo "run.sh: $tool not on PATH (PATH=.venv/bin:\$PATH, or use make test)" >&2
        exit 2
    fi
done

scratch=()          # every directory this runner created

stop_hosts() {
    # A host lives where a xen.pid file is; stop it politely, then firmly.
    local dir pidfile pid
    for dir in "${scratch[@]}"; do
        [ -d "$dir" ] || continue
        while IFS= read -r pidfile; do
            pid=$(cat "$pidfile" 2>/dev/null) || continue
            [[ "$pid" =~ ^[0-9]+$ ]] || continue
            hyperv-sim shutdown --state-dir "$(dirname "$pidfile")" >/dev/null 2>&1 \
                || kill -KILL "$pid" 2>/dev/null || true
        done < <(find "$dir" -name xen.pid 2>/dev/null)
        # A killed hypervisor's devices run on, as hardware does: cut them too.
        pkill -KILL -f "hyperv_sim\.device --bdf [^ ]* --state-dir $dir" 2>/dev/null || true
    done
}

cleanup() {
    stop_hosts
    local dir
    for dir in "${scratch[@]}"; do
        rm -rf "$dir"
    done
}
child=
interrupted() {
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    exit 130
}
trap cleanup EXIT
trap interrupted INT TERM

if [ $# -gt 0 ]; then
    scripts=("$@")
else
    scripts=("$here"/test_*.sh)
fi

passed=0
failed=0
for script in "${scripts[@]}"; do
    [ -f "$script" ] || script="$here/$script"
    name=$(basename "$script" .sh)
    # One scratch directory per script: its host's state directory, its
    # TMPDIR (so whatever it makes with mktemp is found and removed) and its log.
    base=$(mktemp -d "${TMPDIR:-/tmp}/shell-$name.XXXXXX")
    scratch+=("$base")
    state=$(mktemp -d "$base/hyperv-sim.XXXXXX")
    mkdir "$base/tmp"
    log="$base/log"
    # In the background and waited for, so that INT/TERM reach our trap at once.
    HYPERV_SIM_DIR="$state" TMPDIR="$base/tmp" bash "$script" >"$log" 2>&1 </dev/null &
    child=$!
    rc=0
    wait "$child" || rc=$?
    child=
    if [ "$rc" -eq 0 ]; then
        echo "ok $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        sed 's/^/    /' "$log"
        failed=$((failed + 1))
    fi
    stop_hosts
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
