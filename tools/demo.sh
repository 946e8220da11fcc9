#!/usr/bin/env bash
# `make demo`: boot the default simulated host (dom0 + PV, PVH and HVM guests
# with grants, event channels, an IOREQ server and a passthrough device),
# live-update its Xen to a newer one and roll it back, verifying every guest.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
HYPERV_SIM_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kexec-lu-demo.XXXXXX")
export HYPERV_SIM_DIR
images=$HYPERV_SIM_DIR/images
mkdir -p "$images"
cleanup() {
    hyperv-sim shutdown >/dev/null 2>&1 || true
    rm -rf "$HYPERV_SIM_DIR"
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

run hyperv-sim mkimage --xen-version 4.18.2 -o "$images/xen-4.18.gz"
run hyperv-sim mkimage --xen-version 4.19.0 -o "$images/xen-4.19.gz"
run hyperv-sim boot --memory 8G --cmdline "liveupdate=64M dom0_mem=1G" "$images/xen-4.18.gz"
for cfg in "$here"/examples/guests/*.cfg; do
    run hyperv-sim create -f "$cfg"
done
sleep 0.5
run hyperv-sim list
run hyperv-sim verify
run kexec-lu ranges
run kexec-lu info "$images/xen-4.19.gz"

run kexec-lu load --type liveupdate --reuse-cmdline "$images/xen-4.19.gz"
run kexec-lu exec
run hyperv-sim list
run hyperv-sim verify

say "roll back to 4.18"
run kexec-lu load --type liveupdate --reuse-cmdline "$images/xen-4.18.gz"
run kexec-lu exec
run hyperv-sim verify
run hyperv-sim info
