"""Xen's own kexec client drives a simulated host: Debian's unmodified
kexec-tools (fetched by `make fetch-xen`, linked against libxenctrl 4.17),
and kexec-lu through its real-Xen backend, both under `hyperv-sim run`, on a
host with PV, PVH and HVM guests.  kexec's exit codes are its own
documentation's (-S: 1 loaded, 0 not; the default -S type is crash)."""
import gzip

import pytest

from hyperv_sim.mkimage import write_image
from xen_public.errors import XenPublicError
from xen_public.units import MiB

from helpers import assert_restored_whole, boot_host, domains_by_name, full_state, installed_command, \
    loaded_images, run_cli, stop_host, wait_for, wait_steps

GUESTS = [
    dict(name="pv", type="pv", memory=256 << 20, vcpus=2),
    dict(name="pvh", type="pvh", memory=256 << 20, vcpus=2, event_channel_abi="fifo", grant_version=2),
    dict(name="hvm", type="hvm", memory=512 << 20, vcpus=2, pci=["0000:03:00.0"]),
]
CLIENTS = ["kexec", "kexec-lu"]


@pytest.fixture(scope="module")
def elf_images(tmp_path_factory):
    """Uncompressed images: Debian's kexec-tools is built without zlib."""
    d = tmp_path_factory.mktemp("elf")
    out = {}
    for version in ("4.18", "4.19"):
        out[version] = d / ("xen-%s.elf" % version)
        write_image(str(out[version]), xen_version=version, gzip=False)
    return out


def boot_with_guests(state, image, cmdline="liveupdate=64M dom0_mem=512M lu_quiesce_timeout=300"):
    host = boot_host(state, image, memory=4 << 30, cmdline=cmdline)
    for g in GUESTS:
        host.toolstack("create", **g)
    wait_steps(host, at_least=1 << 16)
    return host


@pytest.fixture
def guest_host(tmp_path, elf_images):
    """Xen 4.18 with a PV, a PVH and an HVM guest running."""
    state = tmp_path / "host"
    yield boot_with_guests(state, elf_images["4.18"])
    stop_host(state)


def tool(host, client, xen_artifacts, *args):
    """`hyperv-sim run -- kexec ARGS` (Debian's) or `... -- kexec-lu ARGS`."""
    if client == "kexec":
        argv = [str(xen_artifacts.root / "sbin" / "kexec")]
        env = {"LD_LIBRARY_PATH": str(xen_artifacts.root / "usr" / "lib" / "x86_64-linux-gnu")}
    else:
        argv, env = [installed_command("kexec-lu")], {}
    return run_cli("hyperv-sim", "run", "--", *argv, *[str(a) for a in args],
                   state_dir=host.state_dir, env=env)


def answer(host, op):
    """A toolstack answer, or None between two hypervisors."""
    try:
        return host.toolstack(op)
    except XenPublicError:
        return None


def wait_updated(host, version, incarnation):
    """kexec returns from --exec-live-update before the update is done."""
    def done():
        info, rep = answer(host, "info"), answer(host, "lu-report")
        return (info is not None and rep is not None and info["incarnation"] != incarnation
                and info["xen_version"] == version and rep["state"] == "complete")
    wait_for(done, "the update to %s to complete" % version, timeout=60)


@pytest.mark.parametrize("client", CLIENTS)
def test_status_load_and_unload(guest_host, client, elf_images, xen_artifacts):
    host = guest_host
    def status(*args):
        return tool(host, client, xen_artifacts, "-S", *args).returncode
    assert (status(), status("--load-live-update"), status("-l")) == (0, 0, 0)
    res = tool(host, client, xen_artifacts, "--load-live-update", elf_images["4.19"])
    assert res.returncode == 0, res
    assert (status(), status("--load-live-update"), status("-l")) == (0, 1, 0)
    assert loaded_images(host)["liveupdate"] is not None
    res = tool(host, client, xen_artifacts, "--load-live-update", "-u")
    assert res.returncode == 0, res
    assert status("--load-live-update") == 0 and loaded_images(host)["liveupdate"] is None
    assert tool(host, client, xen_artifacts, "-u").returncode == 0      # nothing loaded: still 0
    assert host.toolstack("verify")["ok"]


@pytest.mark.parametrize("client", CLIENTS)
def test_live_update_and_rollback(guest_host, client, elf_images, xen_artifacts):
    host = guest_host
    before = full_state(host)
    steps = domains_by_name(host)
    lu_start = host.toolstack("info")["lu_bootmem"]["start"]
    for version in ("4.19", "4.18"):
        res = tool(host, client, xen_artifacts, "--load-live-update", elf_images[version])
        assert res.returncode == 0, res
        incarnation = host.toolstack("info")["incarnation"]
        res = tool(host, client, xen_artifacts, "--exec-live-update", "-x")
        assert res.returncode == 0, res
        wait_updated(host, version + ".0", incarnation)    # a bare X.Y image is X.Y.0
        rep = host.toolstack("verify")
        assert rep["ok"], rep["problems"]
        assert_restored_whole(before, full_state(host))
        steps = wait_steps(host, since=steps)           # every guest went on
    if client == "kexec":
        # kexec-tools puts the image's name first (Xen drops it) and carries
        # none of xen#1's options.
        assert host.client.commandline() == "liveupdate=64M@0x%x" % lu_start


@pytest.mark.parametrize("client", CLIENTS)
def test_reboot_and_crash_images_load(tmp_path, client, elf_images, xen_artifacts):
    state = tmp_path / "crash"
    host = boot_host(state, elf_images["4.18"], memory=4 << 30,
                     cmdline="liveupdate=64M dom0_mem=512M crashkernel=256M")
    try:
        crash_start, crash_size = host.toolstack("info")["crash"]["start"], 256 * MiB
        for args in (("-l", elf_images["4.19"]), ("-p", elf_images["4.19"])):
            res = tool(host, client, xen_artifacts, *args)
            assert res.returncode == 0, res
        assert tool(host, client, xen_artifacts, "-S", "-l").returncode == 1
        assert tool(host, client, xen_artifacts, "-S").returncode == 1          # crash
        crash = loaded_images(host)["crash"]
        assert all(crash_start <= s["dest"] and s["dest"] + s["dest_size"] <= crash_start + crash_size
                   for s in crash["segments"] if not s["mapped_only"])
        assert tool(host, client, xen_artifacts, "-p", "-u").returncode == 0
        assert tool(host, client, xen_artifacts, "-S").returncode == 0
        assert tool(host, client, xen_artifacts, "-u").returncode == 0
        assert tool(host, client, xen_artifacts, "-S", "-l").returncode == 0
        assert host.toolstack("verify")["ok"]
    finally:
        stop_host(state)


def test_debians_xen_is_refused_before_anything_changes(tmp_path, guest_host, xen_artifacts, xen_facts):
    host = guest_host
    elf = tmp_path / "xen-4.17.elf"
    elf.write_bytes(gzip.decompress(xen_artifacts.xen_gz.read_bytes()))
    before, info = full_state(host), host.toolstack("info")
    # Where kexec-tools puts it, at xen#1's start, it is larger than xen#1's
    # 3 MiB slot: the hypervisor refuses the load, naming how far it runs over.
    res = tool(host, "kexec", xen_artifacts, "--load-live-update", elf)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res
    size = -(-xen_facts.gz_load.memsz // 4096) * 4096
    over = info["xen"]["start"] + size - (info["xen"]["start"] + info["xen"]["size"])
    assert "runs 0x%x bytes past the end of the running hypervisor's image" % over \
        in "\n".join(host.toolstack("dmesg"))
    assert loaded_images(host)["liveupdate"] is None
    assert_restored_whole(before, full_state(host))


def test_debians_xen_loaded_is_refused_at_preflight(tmp_path, xen_artifacts):
    """On a host whose Xen has a 4 MiB slot Debian's image loads; pre-flight
    refuses it (xen#2 could not boot: no personality) before any pause."""
    big = tmp_path / "xen-4.18-big.elf"
    write_image(str(big), xen_version="4.18", gzip=False, mem_size=4 * MiB)
    elf = tmp_path / "xen-4.17.elf"
    elf.write_bytes(gzip.decompress(xen_artifacts.xen_gz.read_bytes()))
    state = tmp_path / "big"
    host = boot_with_guests(state, big)
    try:
        steps = domains_by_name(host)
        before, info = full_state(host), host.toolstack("info")
        assert tool(host, "kexec", xen_artifacts, "--load-live-update", elf).returncode == 0
        res = tool(host, "kexec", xen_artifacts, "--exec-live-update", "-x")
        assert res.returncode != 0 and "Exec format error" in res.stderr, res
        rep = host.toolstack("lu-report")
        assert rep["state"] == "refused" and "no hyperv-sim personality" in rep["error"], rep
        assert host.toolstack("info")["incarnation"] == info["incarnation"]
        assert_restored_whole(before, full_state(host))
        assert host.toolstack("verify")["ok"]
        wait_steps(host, since=steps)
    finally:
        stop_host(state)


def test_a_halted_update_from_kexec_tools_is_recovered(guest_host, elf_images, sim_images,
                                                        xen_artifacts):
    """xen#2 halts right after kexec-tools' hand-off (lu_fault=restore-start
    on the command line kexec passes): `hyperv-sim recover` finds the
    purgatory's registers above the breadcrumb, as it finds a boot page."""
    host = guest_host
    before, whole = domains_by_name(host), full_state(host)
    res = tool(host, "kexec", xen_artifacts, "--load-live-update",
               "--command-line=lu_fault=restore-start", elf_images["4.19"])
    assert res.returncode == 0, res
    assert tool(host, "kexec", xen_artifacts, "--exec-live-update", "-x").returncode == 0
    wait_for(lambda: "halted" in host.hyperv_sim("info").stderr, "xen#2 to halt", timeout=60)
    res = host.hyperv_sim("recover", "--image", str(sim_images["4.18"]))
    assert res.returncode == 0, res
    assert "recovered with Xen 4.18" in res.stdout
    assert_restored_whole(whole, full_state(host))
    assert host.toolstack("verify")["ok"]
    wait_steps(host, since=before)
