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

def _pinned():
    """The build the script asks for: XEN_DEB_VERSION, or its own pin."""
    with open(SCRIPT) as f:
        default = re.search(r"pinned=\$\{XEN_DEB_VERSION:-([^}]+)\}", f.read()).group(1)
    return os.environ.get("XEN_DEB_VERSION") or default


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


def _served(apt_opts):
    out = subprocess.run(["apt-cache"] + apt_opts + ["madison", "xen-hypervisor-4.17-amd64"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|")[1].strip() for line in out.splitlines() if "|" in line]


def _fetched(tmp_path):
    root = tmp_path / "xen" / "root"
    for p in ("boot/xen-4.17-amd64.gz", "usr/lib/debug/boot/xen-syms-4.17-amd64",
              "usr/include/xen/kexec.h"):
        assert (root / p).is_file(), p
    [deb] = (tmp_path / "xen" / "debs").glob("xen-hypervisor-4.17-amd64_*.deb")
    deb_version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    assert (root / "VERSION").read_text().strip() == deb_version
    return deb_version


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
    got = _fetched(tmp_path)
    if pinned in served:
        assert got == pinned
        assert lines[-1] == "fetch-xen-artifacts: Xen %s (the pinned build) in %s" % (
            pinned, tmp_path / "xen" / "root")
    else:
        assert got == served[0] and "no longer served" in lines[-1]

    again = _fetch(tmp_path, apt_opts)
    assert (again.returncode, again.stdout) == (
        0, "fetch-xen-artifacts: Xen %s cached in %s\n" % (got, tmp_path / "xen" / "root"))


def test_fetch_takes_the_candidate_when_the_pinned_build_is_gone(tmp_path):
    apt_opts = _own_apt(tmp_path)
    gone = "4.17.0+0-g0000000000-0+deb12u0"
    res = _fetch(tmp_path, apt_opts, XEN_DEB_VERSION=gone)
    assert res.returncode == 0, res.stderr
    candidate = re.search(r"Candidate: (\S+)", subprocess.run(
        ["apt-cache"] + apt_opts + ["policy", "xen-hypervisor-4.17-amd64"],
        capture_output=True, text=True, check=True).stdout).group(1)
    assert _fetched(tmp_path) == candidate
    assert res.stdout.splitlines()[-1] == (
        "fetch-xen-artifacts: Xen %s (Debian's candidate; the pinned %s is no longer served) "
        "in %s" % (candidate, gone, tmp_path / "xen" / "root"))


def test_fetch_says_so_when_apt_cannot_help(tmp_path):
    apt_opts = _own_apt(tmp_path) + ["-o", "Dir::Etc::SourceList=/dev/null",
                                     "-o", "Dir::Etc::SourceParts=%s" % tmp_path]
    res = _fetch(tmp_path, apt_opts)
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == (
        "fetch-xen-artifacts: Debian serves no xen-hypervisor-4.17-amd64 "
        "(is this machine on bookworm?)")
    assert not (tmp_path / "xen" / "root").exists()
