#!/usr/bin/env bash
# The real Debian xen.gz: kexec-lu reads it as it is, and a simulated host
# accepts it as a live-update image (it cannot run it, but it can load it).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cache="${KEXEC_LU_XEN_CACHE:-$repo/.cache/xen}"
xen_gz="$cache/root/boot/xen-4.17-amd64.gz"
[ -f "$xen_gz" ] || fail "real Xen image missing: $xen_gz (run make fetch-xen)"

echo "== info"
kexec-lu info --json "$xen_gz" > "$work/info.json"
[ "$(json "$work/info.json" 'j["entry"]')" = 2097152 ] \
    || fail "entry is $(json "$work/info.json" 'j["entry"]'), not 2097152 (0x200000)"
[ "$(json "$work/info.json" 'j["build_id"]')" = 151b373fd64b321593bf987fd923cd10dabadac4 ] \
    || fail "build-id is $(json "$work/info.json" 'j["build_id"]')"
[ "$(json "$work/info.json" 'j["format"]')" = gzip+elf32 ] || fail "not read as gzip+elf32"
[ "$(json "$work/info.json" 'j["relocatable"]["align"]')" = 2097152 ] \
    || fail "relocatable tag alignment is not 2 MiB"

echo "== boot a simulated host"
hyperv-sim mkimage --xen-version 4.18 -o "$work/xen-4.18.gz" >/dev/null
hyperv-sim boot --memory 2G --cmdline "liveupdate=64M dom0_mem=256M" "$work/xen-4.18.gz" >/dev/null
kexec-lu ranges --json > "$work/ranges.json"
lu_start=$(json "$work/ranges.json" '[r for r in j if r["name"] == "liveupdate"][0]["start"]')

echo "== load the real image for live update"
kexec-lu load --type liveupdate --json "$xen_gz" > "$work/plan.json"
[ "$(json "$work/plan.json" 'j["loaded"]')" = True ] || fail "plan says not loaded"
cmdline=$(json "$work/plan.json" 'j["cmdline"]')
expected="liveupdate=62M@0x$(printf %x "$lu_start")"
case "$cmdline" in
    *" $expected" | "$expected") ;;
    *) fail "xen#2 command line '$cmdline' does not end in $expected" ;;
esac
rc=0; kexec-lu status --type liveupdate >/dev/null || rc=$?
[ "$rc" = 1 ] || fail "status after loading the real image exits $rc, not 1"
hyperv-sim info --json > "$work/host.json"
[ "$(json "$work/host.json" 'j["kexec"]["liveupdate"]["entry"]')" = "$(json "$work/plan.json" 'j["entry"]')" ] \
    || fail "the hypervisor holds a different entry than the plan"
echo "all good"
