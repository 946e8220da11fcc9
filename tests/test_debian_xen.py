"""The real Debian artifacts: how they are fetched, and the facts the tests hold them to.

tools/fetch-xen-artifacts.sh must work on a machine whose package lists are
older than the pinned build (or absent), and on a day Debian no longer serves
it; the facts of the build it got come from the table in debian_xen.py or,
for a build never seen, from binutils, od and dpkg-deb.
"""
import os
import re
import subprocess
import warnings

import debian_xen
from helpers import REPO

SCRIPT = str(REPO / "tools" / "fetch-xen-artifacts.sh")


def test_recorded_facts_are_what_binutils_reads(xen_artifacts):
    """The table was written from readelf and od: reading the cached build
    again must give the same facts, or the table (or the reader) is wrong."""
    read = debian_xen.read_facts(xen_artifacts)
    assert read.deb_version == xen_artifacts.deb_version
    known = debian_xen.KNOWN.get(xen_artifacts.deb_version)
    if known is None:
        warnings.warn("Xen %s is not in tests/debian_xen.py's table; its facts were read "
                      "with binutils: %r" % (xen_artifacts.deb_version, read))
    else:
        assert read == known


def test_an_unseen_build_is_held_to_the_facts_read_from_it(xen_artifacts, monkeypatch):
    monkeypatch.setattr(debian_xen, "KNOWN", {})
    facts = debian_xen.facts_for(xen_artifacts)
    assert facts == debian_xen.read_facts(xen_artifacts)
    assert re.fullmatch(r"[0-9a-f]{40}", facts.build_id)
    assert facts.gz_load.filesz < facts.gz_load.memsz and facts.mb2.offset % 8 == 0


# ---------------------------------------------------------------- the fetch script

def _pinned(variable="XEN_DEB_VERSION"):
    """The build the script asks for: the variable, or the script's own pin."""
    with open(SCRIPT) as f:
        default = re.search(r"_pinned=\$\{%s:-([^}]+)\}" % variable, f.read()).group(1)
    return os.environ.get(variable) or default


def _own_apt(tmp_path):
    """apt options for lists and caches of the test's own, empty to begin with:
    the machine's lists are neither read nor changed."""
    lists, cache = tmp_path / "lists", tmp_path / "apt-cache"
    (lists / "partial").mkdir(parents=True)
    (cache / "archives" / "partial").mkdir(parents=True)
    return ["-o", "Dir::State::Lists=%s" % lists, "-o", "Dir::Cache=%s" % cache]


def _fetch(tmp_path, apt_opts, **env):
    return subprocess.run(["bash", SCRIPT, str(tmp_path / "xen")], capture_output=True,
                          text=True, timeout=600, cwd=str(tmp_path),
                          env=dict(os.environ, KEXEC_LU_APT_OPTIONS=" ".join(apt_opts), **env))


def _served(apt_opts, package="xen-hypervisor-4.17-amd64"):
    out = subprocess.run(["apt-cache"] + apt_opts + ["madison", package],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|")[1].strip() for line in out.splitlines() if "|" in line]


def _candidate(apt_opts, package):
    return re.search(r"Candidate: (\S+)", subprocess.run(
        ["apt-cache"] + apt_opts + ["policy", package],
        capture_output=True, text=True, check=True).stdout).group(1)


def _deb_version(tmp_path, package):
    [deb] = (tmp_path / "xen" / "debs").glob("%s_*.deb" % package)
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _fetched(tmp_path):
    """(Xen's version, kexec-tools' version) as fetched, every file there."""
    root = tmp_path / "xen" / "root"
    for p in ("boot/xen-4.17-amd64.gz", "usr/lib/debug/boot/xen-syms-4.17-amd64",
              "usr/include/xen/kexec.h", "sbin/kexec",
              "usr/lib/x86_64-linux-gnu/libxenctrl.so.4.17",
              "usr/lib/x86_64-linux-gnu/libxentoolcore.so.1",
              "usr/lib/x86_64-linux-gnu/libyajl.so.2", "usr/lib/xen-4.17/bin/verify-stream-v2",
              "usr/lib/xen-4.17/lib/python/xen/migration/libxc.py"):
        assert (root / p).is_file(), p
    xen, kexec = (_deb_version(tmp_path, "xen-hypervisor-4.17-amd64"),
                  _deb_version(tmp_path, "kexec-tools"))
    assert (root / "VERSION").read_text().strip() == xen
    assert (root / "KEXEC_TOOLS_VERSION").read_text().strip() == kexec
    # Xen's libraries are all of the hypervisor's build.
    assert _deb_version(tmp_path, "libxenmisc4.17") == _deb_version(tmp_path, "xen-utils-4.17") == xen
    return xen, kexec


def test_fetch_refreshes_lists_that_lack_the_pinned_build(tmp_path):
    apt_opts = _own_apt(tmp_path)
    pinned = _pinned()
    res = _fetch(tmp_path, apt_opts)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == ("fetch-xen-artifacts: Xen %s is not in the package lists; "
                        "running apt-get update" % pinned)
    served = _served(apt_opts)
    assert served, "apt-get update brought no xen-hypervisor-4.17-amd64"
    got, got_kexec = _fetched(tmp_path)
    kexec_pinned = _pinned("KEXEC_TOOLS_DEB_VERSION")
    if pinned in served and kexec_pinned in _served(apt_opts, "kexec-tools"):
        assert (got, got_kexec) == (pinned, kexec_pinned)
        assert lines[-1] == ("fetch-xen-artifacts: Xen %s (the pinned build) and kexec-tools %s "
                             "(the pinned build) in %s" % (pinned, kexec_pinned,
                                                           tmp_path / "xen" / "root"))
    else:
        assert "no longer served" in lines[-1]

    again = _fetch(tmp_path, apt_opts)
    assert (again.returncode, again.stdout) == (
        0, "fetch-xen-artifacts: Xen %s and kexec-tools %s cached in %s\n"
        % (got, got_kexec, tmp_path / "xen" / "root"))


def test_fetch_takes_the_candidate_when_the_pinned_build_is_gone(tmp_path):
    apt_opts = _own_apt(tmp_path)
    gone, kexec_gone = "4.17.0+0-g0000000000-0+deb12u0", "1:2.0.0-0"
    res = _fetch(tmp_path, apt_opts, XEN_DEB_VERSION=gone, KEXEC_TOOLS_DEB_VERSION=kexec_gone)
    assert res.returncode == 0, res.stderr
    candidate = _candidate(apt_opts, "xen-hypervisor-4.17-amd64")
    kexec_candidate = _candidate(apt_opts, "kexec-tools")
    assert _fetched(tmp_path) == (candidate, kexec_candidate)
    assert res.stdout.splitlines()[-1] == (
        "fetch-xen-artifacts: Xen %s (Debian's candidate; the pinned %s is no longer served) "
        "and kexec-tools %s (Debian's candidate; the pinned %s is no longer served) in %s"
        % (candidate, gone, kexec_candidate, kexec_gone, tmp_path / "xen" / "root"))


def test_fetch_says_so_when_apt_cannot_help(tmp_path):
    apt_opts = _own_apt(tmp_path) + ["-o", "Dir::Etc::SourceList=/dev/null",
                                     "-o", "Dir::Etc::SourceParts=%s" % tmp_path]
    res = _fetch(tmp_path, apt_opts)
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == (
        "fetch-xen-artifacts: Debian serves no xen-hypervisor-4.17-amd64 "
        "(is this machine on bookworm?)")
    assert not (tmp_path / "xen" / "root").exists()
