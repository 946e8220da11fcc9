#!/usr/bin/env bash
# Fetch the real Xen artifacts the tests check against, without installing Xen:
# Debian's hypervisor image (xen.gz, xen.efi), its -dbg package (xen-syms) and
# libxen-dev (public headers, for the struct-layout check).  Cached: a second
# run only says what is there.
#
# The pinned build is the one the project last looked at.  If the machine's
# package lists do not carry it (lists older than the build, or none yet),
# they are refreshed first; if Debian no longer serves it at all, the current
# candidate is taken.  The tests know the facts of every build Debian served
# when they were written and read the facts of any other with binutils.
#
# KEXEC_LU_APT_OPTIONS: extra apt options (e.g. "-o Dir::State::Lists=DIR"),
# for a test that runs this script against lists of its own.
set -euo pipefail
cache=${1:-${KEXEC_LU_XEN_CACHE:-.cache/xen}}
pinned=${XEN_DEB_VERSION:-4.17.7+13-g2445b30a44-0+deb12u1}
pkgs=(xen-hypervisor-4.17-amd64 xen-hypervisor-4.17-amd64-dbg libxen-dev)
read -r -a apt_opts <<< "${KEXEC_LU_APT_OPTIONS:-}"
# apt's download user cannot write into a root-owned cache: download as root.
apt_opts+=(-o APT::Sandbox::User=root)

say() { echo "fetch-xen-artifacts: $*"; }
die() { echo "fetch-xen-artifacts: $*" >&2; exit 1; }

if [ -f "$cache/root/boot/xen-4.17-amd64.gz" ] \
   && [ -f "$cache/root/usr/lib/debug/boot/xen-syms-4.17-amd64" ] \
   && [ -f "$cache/root/usr/include/xen/kexec.h" ]; then
    say "Xen $(cat "$cache/root/VERSION" 2>/dev/null || echo '(unknown version)') cached in $cache/root"
    exit 0
fi

# Is VERSION of every package in the lists apt has now?
served() {
    local p
    for p in "${pkgs[@]}"; do
        apt-cache "${apt_opts[@]}" madison "$p" 2>/dev/null \
            | awk -F'|' -v want="$1" '{ gsub(/ /, "", $2) } $2 == want { found = 1 }
                                      END { exit !found }' || return 1
    done
}
candidate() {
    apt-cache "${apt_opts[@]}" policy "${pkgs[0]}" 2>/dev/null \
        | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}

if ! served "$pinned"; then
    say "Xen $pinned is not in the package lists; running apt-get update"
    apt-get "${apt_opts[@]}" update -q >/dev/null \
        || die "apt-get update failed (it needs root and Debian's archive)"
fi
if served "$pinned"; then
    version=$pinned
    why="the pinned build"
else
    version=$(candidate)
    [ -n "$version" ] || die "Debian serves no ${pkgs[0]} (is this machine on bookworm?)"
    served "$version" || die "Debian serves ${pkgs[0]} $version but not all of ${pkgs[*]}"
    why="Debian's candidate; the pinned $pinned is no longer served"
fi

mkdir -p "$cache/debs"
cache=$(cd "$cache" && pwd)
cd "$cache/debs"
rm -f ./*.deb
apt-get "${apt_opts[@]}" download -q "${pkgs[@]/%/=$version}" >/dev/null \
    || die "cannot download ${pkgs[*]} $version with apt-get"

rm -rf ../root.tmp && mkdir ../root.tmp
for deb in *.deb; do dpkg-deb -x "$deb" ../root.tmp; done
dpkg-deb -f xen-hypervisor-4.17-amd64_*.deb Version > ../root.tmp/VERSION
rm -rf ../root && mv ../root.tmp ../root
say "Xen $(cat ../root/VERSION) ($why) in $cache/root"
