#!/usr/bin/env bash
# System tools the test suites use beyond Python: mandoc (man page lint), man
# (rendering), a C compiler, binutils' readelf (the independent reading of
# Debian's Xen images), and ip and unshare (the network-guard test of the
# privcmd bridge, in a network namespace of its own).  Installed from
# Debian's archive when missing.
set -euo pipefail
missing=()
command -v mandoc >/dev/null || missing+=(mandoc)
command -v man >/dev/null || missing+=(man-db)
command -v cc >/dev/null || missing+=(gcc)
command -v readelf >/dev/null || missing+=(binutils)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "ensure-tools: please install ${missing[*]} (needs root)" >&2
    exit 1
fi
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
