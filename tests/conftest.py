"""Shared fixtures: the real Debian Xen artifacts and scratch hosts.

Only fixtures and pytest hooks live here; the helpers tests call are in
helpers.py, which tests import (never this file)."""
import gzip
import os
import pathlib

import pytest

import debian_xen
from helpers import NIC_BDF, REPO, XenArtifacts, boot_host, make_hypervisor, power_off, stop_host


@pytest.fixture(scope="session")
def xen_artifacts():
    """The real Xen images and headers.  Missing artifacts fail, not skip:
    every test that uses them guards behaviour users rely on."""
    cache = pathlib.Path(os.environ.get("KEXEC_LU_XEN_CACHE", REPO / ".cache" / "xen"))
    art = XenArtifacts(cache / "root")
    missing = [p for p in (art.xen_gz, art.xen_efi, art.xen_syms, art.kexec_h, art.verify_stream)
               if not p.exists()]
    if missing:
        pytest.fail("real Xen artifacts missing (%s): run `make fetch-xen`"
                    % ", ".join(str(p) for p in missing))
    return art


@pytest.fixture(scope="session")
def xen_facts(xen_artifacts):
    """What the cached Debian build must look like: the recorded facts for a
    build seen before, else the ones binutils, od and dpkg-deb read from it."""
    try:
        return debian_xen.facts_for(xen_artifacts)
    except debian_xen.OracleError as e:
        pytest.fail("cannot read the facts of Xen %s: %s" % (xen_artifacts.deb_version, e))


@pytest.fixture(scope="session")
def real_xen(xen_artifacts):
    """The real images' bytes: {"xen.gz": as shipped, "xen": decompressed,
    "xen-syms": the debug ELF}."""
    gz = xen_artifacts.xen_gz.read_bytes()
    return {"xen.gz": gz, "xen": gzip.decompress(gz),
            "xen-syms": xen_artifacts.xen_syms.read_bytes()}


# --- simulated hosts -------------------------------------------------------

@pytest.fixture(scope="session")
def sim_images(tmp_path_factory):
    """Bootable images: {version: path}."""
    from hyperv_sim.mkimage import write_image
    d = tmp_path_factory.mktemp("images")
    out = {}
    for version in ("4.18", "4.19"):
        out[version] = d / ("xen-%s.gz" % version)
        write_image(str(out[version]), xen_version=version)
    return out


@pytest.fixture
def host(tmp_path, sim_images):
    """A 2 GiB host running Xen 4.18 with liveupdate=64M, dom0 only."""
    state_dir = tmp_path / "host"
    h = boot_host(state_dir, sim_images["4.18"])
    yield h
    stop_host(state_dir)


@pytest.fixture
def hv(tmp_path, sim_images):
    h = make_hypervisor(tmp_path / "hv", sim_images["4.18"])
    yield h
    power_off(h)


@pytest.fixture
def nic_hv(tmp_path, sim_images):
    """A hypervisor inside the test (devices unpowered: nothing moves but
    what the test does) with a 16 MiB HVM domain "nic" owning device NIC_BDF."""
    from xen_public.units import MiB
    h = make_hypervisor(tmp_path / "h", sim_images["4.18"], memory=1 << 30,
                        cmdline="liveupdate=64M dom0_mem=128M")
    try:
        h.create_domain("nic", "hvm", 16 * MiB, 1, pci=[NIC_BDF])
        yield h
    finally:
        power_off(h)


def pytest_sessionfinish(session, exitstatus):
    """No test may leave host RAM behind: guest memory is reserved on disk,
    and pytest keeps its last three runs' directories."""
    base = session.config._tmp_path_factory.getbasetemp() if hasattr(session.config, "_tmp_path_factory") else None
    if base is None or not base.exists():
        return
    left = [p for p in base.rglob("ram") if p.is_file() and not p.is_symlink()]
    for p in left:
        p.unlink()
    if left and exitstatus == 0:
        print("\nRAM files left by tests (removed): %s" % ", ".join(str(p.relative_to(base)) for p in left))
        session.exitstatus = 1
