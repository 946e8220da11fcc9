#!/usr/bin/env bash
# Fetch the real Xen artifacts the tests check against, without installing Xen:
# Debian's hypervisor image (xen.gz, xen.efi), its -dbg package (xen-syms) and
# libxen-dev (public headers, for the struct-layout check).  Cached: a second
# run does nothing.
set -euo pipefail
cache=${1:-${KEXEC_LU_XEN_CACHE:-.cache/xen}}
# The version the tests' expected facts were taken from.  If the archive no
# longer carries it, the current candidate is fetched and the tests that
# assert exact facts say which version they expected.
version=${XEN_DEB_VERSION:-4.17.7+13-g2445b30a44-0+deb12u1}
pkgs=(xen-hypervisor-4.17-amd64 xen-hypervisor-4.17-amd64-dbg libxen-dev)

if [ -f "$cache/root/boot/xen-4.17-amd64.gz" ] \
   && [ -f "$cache/root/usr/lib/debug/boot/xen-syms-4.17-amd64" ] \
   && [ -f "$cache/root/usr/include/xen/kexec.h" ]; then
    exit 0
fi

mkdir -p "$cache/debs"
cd "$cache/debs"

download() {
    apt-get download -q "$@" >/dev/null 2>&1
}
fetch_all() {
    download "${pkgs[@]/%/=$version}" || download "${pkgs[@]}"
}
if ! fetch_all; then
    # A fresh machine has no package lists yet.
    apt-get update -q >/dev/null
    fetch_all || { echo "fetch-xen-artifacts: cannot download ${pkgs[*]} with apt-get" >&2; exit 1; }
fi

rm -rf ../root.tmp && mkdir ../root.tmp
for deb in *.deb; do dpkg-deb -x "$deb" ../root.tmp; done
dpkg-deb -f xen-hypervisor-4.17-amd64_*.deb Version > ../root.tmp/VERSION
rm -rf ../root && mv ../root.tmp ../root
echo "fetch-xen-artifacts: Xen $(cat ../root/VERSION) in $cache/root"
