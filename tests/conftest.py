"""Shared fixtures: the real Debian Xen artifacts and scratch hosts."""
import os
import pathlib
import subprocess
import sys

import pytest

import debian_xen

REPO = pathlib.Path(__file__).resolve().parent.parent


class XenArtifacts:
    """Paths inside the cache that `make fetch-xen` fills."""

    def __init__(self, root):
        self.root = root
        self.xen_gz = root / "boot" / "xen-4.17-amd64.gz"
        self.xen_efi = root / "boot" / "xen-4.17-amd64.efi"
        self.xen_syms = root / "usr" / "lib" / "debug" / "boot" / "xen-syms-4.17-amd64"
        self.include = root / "usr" / "include"
        self.kexec_h = self.include / "xen" / "kexec.h"
        version_file = root / "VERSION"
        self.deb_version = version_file.read_text().strip() if version_file.exists() else None


@pytest.fixture(scope="session")
def xen_artifacts():
    """The real Xen images and headers.  Missing artifacts fail, not skip:
    every test that uses them guards behaviour users rely on."""
    cache = pathlib.Path(os.environ.get("KEXEC_LU_XEN_CACHE", REPO / ".cache" / "xen"))
    art = XenArtifacts(cache / "root")
    missing = [p for p in (art.xen_gz, art.xen_efi, art.xen_syms, art.kexec_h) if not p.exists()]
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


# --- simulated hosts -------------------------------------------------------



class CliResult:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __repr__(self):
        return "<rc=%d stdout=%r stderr=%r>" % (self.returncode, self.stdout[-500:], self.stderr[-500:])


def installed_command(prog):
    """The console script `kexec-lu` or `hyperv-sim` that the install put
    beside this interpreter: what a user runs."""
    path = pathlib.Path(sys.executable).with_name(prog)
    if not path.exists():
        pytest.fail("%s is not installed beside %s (make install)" % (prog, sys.executable))
    return str(path)


def run_cli(prog, *args, env=None, state_dir=None, timeout=120, cwd=None):
    """Run `kexec-lu` or `hyperv-sim` as a user would: the installed command."""
    full_env = dict(os.environ, **(env or {}))
    if state_dir is not None:
        full_env["HYPERV_SIM_DIR"] = str(state_dir)
    proc = subprocess.run([installed_command(prog)] + [str(a) for a in args],
                          capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd)
    return CliResult(proc)


class Host:
    """A booted simulated host in a temporary directory."""

    def __init__(self, state_dir):
        from kexec_lu.hypercall import XenClient
        from xen_public.privcmd import SocketPrivcmd
        self.state_dir = state_dir
        self.privcmd = SocketPrivcmd(str(state_dir))
        self.client = XenClient(self.privcmd)

    def toolstack(self, op, **args):
        return self.privcmd.toolstack(op, **args)

    def kexec_lu(self, *args):
        return run_cli("kexec-lu", *args, state_dir=self.state_dir)

    def hyperv_sim(self, *args):
        return run_cli("hyperv-sim", *args, state_dir=self.state_dir)


def full_state(host):
    """Every domain's whole state as `hyperv-sim list --long` gives it, and
    every mapping and PCI assignment, masking only what moves while guests
    run: steps, registers, run states, pending event bits.  The layout is
    the builder's, which xen#2 does not learn (null after an update)."""
    state = host.toolstack("details")
    for d in state["domains"]:
        del d["steps"], d["layout"]
        d["vcpu_states"] = [(v["vcpu"], v["paused"]) for v in d["vcpu_states"]]
        for port in d["ports"]:
            del port["pending"]
    return state


def assert_restored_whole(before, after):
    assert [d["name"] for d in after["domains"]] == [d["name"] for d in before["domains"]]
    for b, a in zip(before["domains"], after["domains"]):
        for key in sorted(set(b) | set(a)):
            assert a.get(key) == b.get(key), "%s: %s was %r, is %r" % (
                b["name"], key, b.get(key), a.get(key))
    assert after["mappings"] == before["mappings"]
    assert after["pci_assigned"] == before["pci_assigned"]


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


def boot_host(state_dir, image, memory=2 << 30, cmdline="liveupdate=64M dom0_mem=256M"):
    from hyperv_sim.bootloader import boot
    boot(str(image), str(state_dir), memory, cmdline)
    return Host(state_dir)


def stop_host(state_dir):
    from hyperv_sim.bootloader import running_pid, shutdown
    pid = running_pid(str(state_dir))
    if not pid:
        return
    try:
        shutdown(str(state_dir), timeout=10)
    except Exception:
        os.kill(pid, 9)


@pytest.fixture
def host(tmp_path, sim_images):
    """A 2 GiB host running Xen 4.18 with liveupdate=64M, dom0 only."""
    state_dir = tmp_path / "host"
    h = boot_host(state_dir, sim_images["4.18"])
    yield h
    stop_host(state_dir)


def make_hypervisor(state_dir, image, memory=2 << 30, cmdline="liveupdate=64M dom0_mem=256M"):
    """A hypervisor in this process, on fresh host RAM: for tests that look
    inside (frame table, RAM) rather than through privcmd."""
    from hyperv_sim.bootloader import power_on
    from hyperv_sim.console import Console
    from hyperv_sim.hypervisor import Hypervisor
    from hyperv_sim.ram import HostRAM
    ram_path, entry, _ = power_on(str(image), str(state_dir), memory, cmdline)
    return Hypervisor(HostRAM.open(ram_path), entry, Console(), nr_pcpus=2)


@pytest.fixture
def hv(tmp_path, sim_images):
    h = make_hypervisor(tmp_path / "hv", sim_images["4.18"])
    yield h
    h.close()
