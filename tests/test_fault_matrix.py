"""Every named fault point, on one host that has every kind of domain and
every kind of state a stream carries.

Before the point of no return the update is undone: the same hypervisor
runs on, every domain is as it was (running ones advance, a paused one keeps
its exact step, a dying one stays dying) and `verify` holds.  After it, xen#2
halts naming the point, with RAM and breadcrumb intact, and `hyperv-sim
recover --image` (the same image or the other one) finishes the restore.
"""
import json

import pytest

from hyperv_sim.faultpoints import FAULTS_AFTER_PONR, FAULTS_BEFORE_PONR, SAVE_RECORD_FAULTS
from xen_public import abi, lustream
from kexec_lu.errors import KexecLuError
from kexec_lu.liveupdate import run_live_update

from helpers import assert_restored_whole, boot_host, breadcrumb_magic, device_pids, dma_ops, domains_by_name, \
    full_state, irqs_taken, stop_host, wait_for, wait_steps

# Between them: PV, PVH and HVM; 2-level and FIFO event channels; grant
# tables v1 and v2; an IOREQ server; a passthrough device; dom0's backend
# grant maps and device-model foreign maps; a paused and a dying domain; and
# a crash image loaded, which every update carries and every abort keeps.
GUESTS = [
    dict(name="pv", type="pv", memory=96 << 20, vcpus=2),
    dict(name="pv-fifo", type="pv", memory=64 << 20, vcpus=1, event_channel_abi="fifo",
         grant_version=2),
    dict(name="pvh", type="pvh", memory=96 << 20, vcpus=2, event_channel_abi="fifo", grant_version=2),
    dict(name="hvm", type="hvm", memory=128 << 20, vcpus=2, pci=["0000:03:00.0"]),
    # PVH: an HVM vCPU paused mid-I/O takes the step that completes it
    # (test_liveupdate.py), which would blur "exactly as it was" here.
    dict(name="paused", type="pvh", memory=64 << 20, vcpus=1),
    dict(name="dying", type="pv", memory=64 << 20, vcpus=1),
]
RUNNING = ["Domain-0", "pv", "pv-fifo", "pvh", "hvm"]


@pytest.fixture(scope="module")
def matrix_host(tmp_path_factory, sim_images):
    state = tmp_path_factory.mktemp("matrix") / "host"
    host = boot_host(state, sim_images["4.18"], memory=2 << 30,
                     cmdline="liveupdate=64M dom0_mem=256M crashkernel=64M lu_quiesce_timeout=2000")
    res = host.kexec_lu("load", "--type", "crash", str(sim_images["4.18"]))
    assert res.returncode == 0, res
    for g in GUESTS:
        host.toolstack("create", **g)
    wait_steps(host, names=RUNNING)
    host.toolstack("pause", domain="paused")
    host.toolstack("destroy", domain="dying", detach=False)
    yield host
    stop_host(state)


def other_image(host, sim_images):
    """(the image of the version not running, the running version)."""
    running = host.toolstack("info")["xen_version"]
    return sim_images["4.19" if running == "4.18.0" else "4.18"], running


def assert_as_before(host, before):
    """Every domain in the state it had; running ones advance; nothing leaked."""
    now = domains_by_name(host)
    assert set(now) == set(before)
    for name, d in before.items():
        assert now[name]["state"] == d["state"], (name, d, now[name])
    assert now["paused"]["steps"] == before["paused"]["steps"]
    assert now["dying"]["steps"] == before["dying"]["steps"]
    wait_steps(host, since=before, names=RUNNING)
    # The passthrough device's guest takes interrupts again.
    taken = irqs_taken(host)
    wait_for(lambda: all(n > taken[b] for b, n in irqs_taken(host).items()), "interrupts again")
    rep = host.toolstack("verify")
    assert rep["ok"], rep["problems"]
    assert "lu-stream" not in host.toolstack("info")["frames"], "stream pages leaked"
    assert breadcrumb_magic(host) == 0


def test_the_matrix_host_makes_every_record_kind(matrix_host, sim_images, tmp_path):
    """So that each save:<RECORD> point below is really reached."""
    host = matrix_host
    out = tmp_path / "state.lustream"
    assert host.hyperv_sim("stream", "save", "-o", str(out)).returncode == 0
    dump = host.hyperv_sim("stream", "dump", "--json", str(out))
    assert dump.returncode == 0, dump
    written = {row["what"].split("|")[0] for row in json.loads(dump.stdout) if "type" in row}
    assert written == {p[len("save:"):] for p in SAVE_RECORD_FAULTS} | {"END"}


@pytest.mark.parametrize("point", FAULTS_BEFORE_PONR)
def test_a_fault_before_the_point_of_no_return_changes_nothing(matrix_host, sim_images, point):
    host = matrix_host
    image, running = other_image(host, sim_images)
    host.load_lu(image)
    before, info = domains_by_name(host), host.toolstack("info")
    whole = full_state(host)
    host.toolstack("lu-fault", point=point)
    if point == "preflight":
        with pytest.raises(KexecLuError, match="injected fault at preflight"):
            run_live_update(host.client, timeout=30)
    else:
        rep = run_live_update(host.client, timeout=30)
        assert rep["state"] == "aborted" and rep["error"] == "injected fault at %s" % point, rep
        assert "live update aborted, every domain resumed: injected fault at %s" % point in \
            host.hyperv_sim("dmesg").stdout
    now = host.toolstack("info")
    assert (now["incarnation"], now["xen_version"]) == (info["incarnation"], running)
    assert_restored_whole(whole, full_state(host))
    assert_as_before(host, before)
    # The image stays loaded, and a retry completes.
    assert host.client.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE) == 1
    before = domains_by_name(host)
    rep = run_live_update(host.client, timeout=30)
    assert rep["state"] == "complete", rep
    assert_as_before(host, before)


@pytest.mark.parametrize("recover_with", ["same", "other"])
@pytest.mark.parametrize("point", FAULTS_AFTER_PONR)
def test_a_fault_after_the_point_of_no_return_halts_and_recovers(matrix_host, sim_images, point,
                                                                recover_with):
    host = matrix_host
    image, running = other_image(host, sim_images)
    host.load_lu(image, "--append", "lu_fault=" + point)
    before, whole = domains_by_name(host), full_state(host)
    pids = device_pids(host.state_dir)
    assert list(pids) == ["0000:03:00.0"]
    lu_start = host.toolstack("info")["lu_bootmem"]["start"]
    rep = run_live_update(host.client, timeout=30)
    assert rep["state"] == "halted" and "injected fault at %s" % point in rep["error"], rep
    # Halted, naming the point; RAM and the breadcrumb as xen#1 left them.
    res = host.hyperv_sim("info")
    assert res.returncode == 1 and "halted" in res.stderr
    assert "PANIC: live-update restore failed: injected fault at %s" % point in \
        host.hyperv_sim("dmesg").stdout
    assert breadcrumb_magic(host, lu_start) == abi.LU_BREADCRUMB_MAGIC
    dump = host.hyperv_sim("stream", "dump")
    assert dump.returncode == 0, dump
    assert dump.stdout.count("LU_DOMAIN") == len(before)
    # The device runs on against the tables xen#1 left, with no hypervisor
    # to speak of: the same process, DMA going on, nothing dropped.
    assert device_pids(host.state_dir) == pids
    ops = dma_ops(host)
    wait_for(lambda: all(n > ops[b] for b, n in dma_ops(host).items()), "DMA while halted")
    target = image if recover_with == "same" else sim_images[{"4.18.0": "4.18", "4.19.0": "4.19"}[running]]
    res = host.hyperv_sim("recover", "--image", str(target))
    assert res.returncode == 0, res
    version = "4.19.0" if "4.19" in target.name else "4.18.0"
    assert "recovered with Xen %s" % version in res.stdout
    assert host.toolstack("info")["xen_version"] == version
    assert_restored_whole(whole, full_state(host))
    assert_as_before(host, before)
    assert device_pids(host.state_dir) == pids       # never restarted; verify checked its DMA


def test_every_fault_point_is_covered():
    """The matrix above parametrizes over the engine's own list; this pins
    the list's shape so a point cannot silently drop out of it."""
    assert FAULTS_BEFORE_PONR[:4] == ("preflight", "quiesce-hvm", "quiesce-pv", "save")
    assert FAULTS_BEFORE_PONR[-4:] == ("stream-alloc", "mfn-array", "breadcrumb", "image-check")
    assert len(SAVE_RECORD_FAULTS) == len(lustream.RECORD_NAMES) - 1
    assert FAULTS_AFTER_PONR == ("restore-start", "restore-validate", "restore-pass0",
                                 "restore-pass1", "restore-pass2", "unpause")
