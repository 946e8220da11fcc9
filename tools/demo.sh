#!/usr/bin/env bash
# `make demo`: boot a default simulated host, build a newer Xen image, and
# show what `kexec-lu load --type liveupdate` plans and loads.
set -euo pipefail

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
run hyperv-sim create --type pv --memory 1G --vcpus 2 web
run hyperv-sim create --type pvh --memory 512M --vcpus 1 cache
run hyperv-sim create --type hvm --memory 2G --vcpus 2 windows
run hyperv-sim list
run kexec-lu ranges
run kexec-lu info "$images/xen-4.19.gz"
run kexec-lu load --type liveupdate --reuse-cmdline "$images/xen-4.19.gz"
say kexec-lu status --type liveupdate
kexec-lu status --type liveupdate && rc=0 || rc=$?
echo "(exit status $rc: 1 means loaded, as with kexec -S)"
run hyperv-sim info
