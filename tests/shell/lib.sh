# Sourced by every tests/shell/test_*.sh: a host directory of its own, a
# scratch directory, both cleaned up, and small helpers.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${HYPERV_SIM_DIR:-}" ]; then
    HYPERV_SIM_DIR=$(mktemp -d)
    export HYPERV_SIM_DIR
fi
work=$(mktemp -d)
trap 'hyperv-sim shutdown >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# json FILE EXPR: print a Python expression over the JSON document j.
json() { python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# status_of CMD...: run a command, print its exit status (set -e safe).
status_of() { local rc=0; "$@" >/dev/null 2>&1 || rc=$?; echo "$rc"; }
