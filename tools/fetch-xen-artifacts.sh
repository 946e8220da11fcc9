#!/usr/bin/env bash
# Fetch the real Xen artifacts the tests check against, without installing
# anything: Debian's hypervisor image (xen.gz, xen.efi), its -dbg package
# (xen-syms), libxen-dev (public headers, for the struct-layout check), and
# Xen's own kexec client: kexec-tools with libxenctrl (libxenmisc4.17) and
# the libraries it loads, to run unmodified under `hyperv-sim run`; and
# xen-utils for Xen's migration-stream verifier (verify-stream-v2 and its
# Python modules), the tests' oracle for the records the stream shares with
# migration.  All of it is unpacked into one root; cached: a second run only
# says what is there.
#
# The pinned builds are the ones the project last looked at.  If the
# machine's package lists do not carry them (lists older than the build, or
# none yet), they are refreshed first; if Debian no longer serves a pinned
# build at all, its current candidate is taken.  The tests know the facts of
# every Xen build Debian served when they were written and read the facts of
# any other with binutils.
#
# KEXEC_LU_APT_OPTIONS: extra apt options (e.g. "-o Dir::State::Lists=DIR"),
# for a test that runs this script against lists of its own.
set -euo pipefail
cache=${1:-${KEXEC_LU_XEN_CACHE:-.cache/xen}}
xen_pinned=${XEN_DEB_VERSION:-4.17.7+13-g2445b30a44-0+deb12u1}
kexec_pinned=${KEXEC_TOOLS_DEB_VERSION:-1:2.0.25-3+deb12u3}
# Built from Xen's source: one version for all of them.
xen_pkgs=(xen-hypervisor-4.17-amd64 xen-hypervisor-4.17-amd64-dbg libxen-dev
          libxenmisc4.17 libxencall1 libxendevicemodel1 libxenevtchn1
          libxenforeignmemory1 libxengnttab1 libxenhypfs1 libxenstore4
          libxentoollog1 libxentoolcore1 xen-utils-4.17)
kexec_pkgs=(kexec-tools)
# libxenmisc4.17's one dependency from outside Xen that a Debian machine
# may lack; whatever version Debian serves.
other_pkgs=(libyajl2)
read -r -a apt_opts <<< "${KEXEC_LU_APT_OPTIONS:-}"
# apt's download user cannot write into a root-owned cache: download as root.
apt_opts+=(-o APT::Sandbox::User=root)

say() { echo "fetch-xen-artifacts: $*"; }
die() { echo "fetch-xen-artifacts: $*" >&2; exit 1; }

root=$cache/root
if [ -f "$root/boot/xen-4.17-amd64.gz" ] \
   && [ -f "$root/usr/lib/debug/boot/xen-syms-4.17-amd64" ] \
   && [ -f "$root/usr/include/xen/kexec.h" ] \
   && [ -f "$root/sbin/kexec" ] && [ -f "$root/KEXEC_TOOLS_VERSION" ] \
   && [ -f "$root/usr/lib/xen-4.17/bin/verify-stream-v2" ]; then
    say "Xen $(cat "$root/VERSION") and kexec-tools $(cat "$root/KEXEC_TOOLS_VERSION") cached in $root"
    exit 0
fi

# Is VERSION of every package named after it in the lists apt has now?
served() {
    local want=$1 p
    shift
    for p in "$@"; do
        apt-cache "${apt_opts[@]}" madison "$p" 2>/dev/null \
            | awk -F'|' -v want="$want" '{ gsub(/ /, "", $2) } $2 == want { found = 1 }
                                        END { exit !found }' || return 1
    done
}
candidate() {
    apt-cache "${apt_opts[@]}" policy "$1" 2>/dev/null \
        | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}
# pick NAME PINNED PKG...: the pinned version if served, else the candidate
# of the first package; sets `picked` and `why`.
pick() {
    local name=$1 pinned=$2
    shift 2
    if served "$pinned" "$@"; then
        picked=$pinned
        why="the pinned build"
        return
    fi
    picked=$(candidate "$1")
    [ -n "$picked" ] || die "Debian serves no $1 (is this machine on bookworm?)"
    served "$picked" "$@" || die "Debian serves $1 $picked but not all of $*"
    why="Debian's candidate; the pinned $pinned is no longer served"
}

if ! served "$xen_pinned" "${xen_pkgs[@]}" || ! served "$kexec_pinned" "${kexec_pkgs[@]}" \
   || [ -z "$(candidate "${other_pkgs[0]}")" ]; then
    missing="Xen $xen_pinned"
    served "$xen_pinned" "${xen_pkgs[@]}" && missing="kexec-tools $kexec_pinned"
    say "$missing is not in the package lists; running apt-get update"
    apt-get "${apt_opts[@]}" update -q >/dev/null \
        || die "apt-get update failed (it needs root and Debian's archive)"
fi
pick Xen "$xen_pinned" "${xen_pkgs[@]}"
xen_version=$picked xen_why=$why
pick kexec-tools "$kexec_pinned" "${kexec_pkgs[@]}"
kexec_version=$picked kexec_why=$why

mkdir -p "$cache/debs"
cache=$(cd "$cache" && pwd)
cd "$cache/debs"
rm -f ./*.deb
apt-get "${apt_opts[@]}" download -q "${xen_pkgs[@]/%/=$xen_version}" \
        "${kexec_pkgs[@]/%/=$kexec_version}" "${other_pkgs[@]}" >/dev/null \
    || die "cannot download Xen $xen_version and kexec-tools $kexec_version with apt-get"

rm -rf ../root.tmp && mkdir ../root.tmp
for deb in *.deb; do dpkg-deb -x "$deb" ../root.tmp; done
dpkg-deb -f xen-hypervisor-4.17-amd64_*.deb Version > ../root.tmp/VERSION
dpkg-deb -f kexec-tools_*.deb Version > ../root.tmp/KEXEC_TOOLS_VERSION
rm -rf ../root && mv ../root.tmp ../root
say "Xen $(cat ../root/VERSION) ($xen_why) and kexec-tools $(cat ../root/KEXEC_TOOLS_VERSION) ($kexec_why) in $cache/root"
