"""Live update end to end, across a real exec: guests of every kind keep
running, nothing is lost, failures before the point of no return resume
everything, a corrupted stream after it is refused before anything changes."""
import os
import struct
import time

import pytest

from hyperv_sim.mkimage import write_image
from xen_public import abi, lustream
from kexec_lu.liveupdate import run_live_update
from kexec_lu.errors import KexecLuError

from helpers import assert_restored_whole, boot_host, breadcrumb_magic, dirty_free_bytes, domains_by_name, full_state, \
    read_ram, stop_host, wait_steps, write_ram

GUESTS = [
    dict(name="pv", type="pv", memory=256 << 20, vcpus=2),
    dict(name="pvh", type="pvh", memory=256 << 20, vcpus=2, event_channel_abi="fifo", grant_version=2),
    dict(name="hvm", type="hvm", memory=512 << 20, vcpus=2, pci=["0000:03:00.0"]),
]


@pytest.fixture
def lu_host(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=4 << 30,
                     cmdline="liveupdate=64M dom0_mem=512M lu_quiesce_timeout=300")
    for g in GUESTS:
        host.toolstack("create", **g)
    wait_steps(host, at_least=1 << 17)
    yield host
    stop_host(state)


def info(host):
    return host.toolstack("info")


def update(host, image):
    host.load_lu(image)
    return run_live_update(host.client, timeout=60)


def assert_healthy(host):
    rep = host.toolstack("verify")
    assert rep["ok"], rep["problems"]
    frames = info(host)["frames"]
    assert "lu-stream" not in frames, "stream pages leaked"
    if not host.client.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE):
        assert "kexec-image" not in frames, "staging frames leaked"


def children(pid):
    """Processes (zombies included) whose parent is pid."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append((int(entry), fields[0]))
    return out


def assert_no_process_left(host, timeout=5):
    """xen#1's address-space holder (lu_exec.c) has exited and been reaped."""
    pid = info(host)["pid"]
    deadline = time.monotonic() + timeout
    while children(pid):
        assert time.monotonic() < deadline, "left behind: %s" % children(pid)
        time.sleep(0.02)


def test_update_and_rollback_keep_every_guest(lu_host, sim_images):
    host = lu_host
    before = info(host)
    for n, (image, version) in enumerate([(sim_images["4.19"], "4.19.0"), (sim_images["4.18"], "4.18.0"),
                                          (sim_images["4.19"], "4.19.0"), (sim_images["4.18"], "4.18.0")]):
        running = domains_by_name(host)
        whole = full_state(host)
        rep = update(host, image)
        assert rep["state"] == "complete", rep
        assert_restored_whole(whole, full_state(host))
        now = info(host)
        # The same process, a new program: exec happened.
        assert now["pid"] == before["pid"] and now["incarnation"] != before["incarnation"]
        assert now["xen_version"] == version
        before = now
        assert rep["restored_domains"] == 4
        # Nothing but the stream was written: guest memory was not copied.
        assert rep["xen2_guest_bytes_written"] == 0
        # And the stream's frames, free again, hold none of it (scrubbed
        # after the guests run, before anyone can allocate).
        assert dirty_free_bytes(host) == 0
        console = (host.state_dir / "console.log").read_text()
        assert console.count("live update: 0 bytes of guest frames written by xen#1") == n + 1
        guest_bytes = sum(g["memory"] for g in GUESTS) + (512 << 20)
        assert rep["stream_bytes"] < guest_bytes / 10000
        assert [p["name"] for p in rep["phases"]][:4] == ["preflight", "quiesce", "save", "handover"]
        assert rep["blackout_ms"] > 0
        assert_healthy(host)
        assert_no_process_left(host)
        # Workloads carry on from where they were.
        wait_steps(host, since=running, names=running)
        assert breadcrumb_magic(host) == 0    # consumed
    # LU bootmem and Xen are still one window for the next update.
    lu, xen = info(host)["lu_bootmem"], info(host)["xen"]
    assert lu["start"] + lu["size"] == xen["start"]


def test_paused_stays_paused_at_its_exact_step_and_dying_stays_dying(lu_host, sim_images):
    host = lu_host
    host.toolstack("pause", domain="pvh")
    host.toolstack("destroy", domain="pv", detach=False)
    frozen = domains_by_name(host)
    whole = full_state(host)
    rep = update(host, sim_images["4.19"])
    assert rep["state"] == "complete", rep
    assert_restored_whole(whole, full_state(host))
    doms = domains_by_name(host)
    assert doms["pvh"]["state"] == "paused" and doms["pvh"]["steps"] == frozen["pvh"]["steps"]
    assert doms["pv"]["state"] == "dying" and doms["pv"]["steps"] == frozen["pv"]["steps"]
    assert doms["hvm"]["state"] == "running"
    assert_healthy(host)
    host.toolstack("detach", domain="pv")            # dom0's backend lets go: now it goes
    assert "pv" not in {d["name"] for d in host.toolstack("list")}
    host.toolstack("unpause", domain="pvh")
    assert_healthy(host)


def test_a_domain_paused_mid_io_takes_only_the_step_that_completes_it(tmp_path, sim_images):
    """Paused with an I/O request in flight, an HVM vCPU is not at a
    restartable boundary: the quiesce lets it finish that request, one
    step, and not a whole turn on a pCPU more."""
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30,
                     cmdline="liveupdate=64M dom0_mem=128M lu_quiesce_timeout=2000")
    try:
        host.toolstack("create", name="hvm", type="hvm", memory=32 << 20, vcpus=1)
        deadline = time.monotonic() + 10
        while True:
            host.toolstack("pause", domain="hvm")
            vcpu, = host.toolstack("details", domain="hvm")["domains"][0]["vcpu_states"]
            if vcpu["runstate"] == "blocked (I/O)":
                break
            host.toolstack("unpause", domain="hvm")
            assert time.monotonic() < deadline, "never paused with an I/O request in flight"
        rep = update(host, sim_images["4.19"])
        assert rep["state"] == "complete", rep
        now, = host.toolstack("details", domain="hvm")["domains"][0]["vcpu_states"]
        assert (now["steps"], now["runstate"], now["paused"]) == (vcpu["steps"] + 1, "running", True)
        time.sleep(0.05)
        assert {d["name"]: (d["state"], d["steps"]) for d in host.toolstack("list")}["hvm"] == \
            ("paused", vcpu["steps"] + 1)
        assert_healthy(host)
    finally:
        stop_host(state)


def wait_blocked_on_io(host, domain, timeout=20):
    """Until every vCPU of the domain waits for its device model."""
    deadline = time.monotonic() + timeout
    while True:
        vcpus = host.toolstack("details", domain=domain)["domains"][0]["vcpu_states"]
        if all(v["runstate"] == "blocked (I/O)" for v in vcpus):
            return vcpus
        assert time.monotonic() < deadline, "never blocked on I/O: %s" % vcpus
        time.sleep(0.01)


def test_a_device_model_that_never_answers_times_the_quiesce_out(lu_host, sim_images):
    host = lu_host
    host.load_lu(sim_images["4.19"])
    host.toolstack("pause", domain="0")      # dom0 runs the device model
    # Only a vCPU with a request in flight cannot be paused; one between two
    # requests could be, and the update would complete.
    wait_blocked_on_io(host, "hvm")
    rep = run_live_update(host.client, timeout=30)
    assert rep["state"] == "aborted"
    assert "d3 (hvm) never reached a restartable boundary" in rep["error"]
    assert rep["error"].endswith(": waiting for its device model in d0 (Domain-0), which the "
                                 "administrator paused (unpause it and retry)"), rep["error"]
    host.toolstack("unpause", domain="0")
    assert all(d["state"] == "running" for d in host.toolstack("list"))
    assert_healthy(host)


def test_preflight_refuses_an_image_that_cannot_restore_the_state(lu_host, sim_images, tmp_path,
                                                                  xen_artifacts):
    host = lu_host
    no_fifo = tmp_path / "no-fifo.gz"
    write_image(str(no_fifo), xen_version="4.19",
                lu_record_types=[t for t in lustream.ALL_RECORD_TYPES if t != lustream.REC_LU_EVTCHN_FIFO])
    no_stream = tmp_path / "no-lu.gz"
    write_image(str(no_stream), xen_version="4.19", lu=False)
    cases = [(no_fifo, "cannot restore LU_EVTCHN_FIFO records, needed because d2 (pvh) uses FIFO event channels"),
             (no_stream, "cannot restore any live-update stream"),
             (xen_artifacts.xen_gz, "xen#2 could not boot from this load: image carries no hyperv-sim personality")]
    incarnation = info(host)["incarnation"]
    for image, words in cases:
        host.load_lu(image)
        with pytest.raises(KexecLuError) as e:
            run_live_update(host.client, timeout=30)
        assert words in str(e.value)
        assert all(d["state"] == "running" for d in host.toolstack("list"))
    assert info(host)["incarnation"] == incarnation
    host.kexec_lu("unload", "--type", "liveupdate")
    with pytest.raises(KexecLuError, match="no live-update image loaded"):
        run_live_update(host.client, timeout=30)
    assert_healthy(host)


def test_a_corrupted_stream_is_refused_before_anything_changes(lu_host, sim_images):
    """A byte of the stream flipped in RAM after xen#1 sealed it, as a
    memory error would: xen#2 halts at the first restore (injected, so that
    the byte can be flipped from outside), then a recovery finds the stream
    does not match its breadcrumb hash and halts too."""
    host = lu_host
    host.load_lu(sim_images["4.19"], "--append", "lu_fault=restore-start")
    lu_start = info(host)["lu_bootmem"]["start"]
    rep = run_live_update(host.client, timeout=30)
    assert rep["state"] == "halted" and "restore-start" in rep["error"], rep
    # Halted, not gone: RAM and the breadcrumb are there for a recovery.
    assert breadcrumb_magic(host, lu_start) == abi.LU_BREADCRUMB_MAGIC
    _, array, _, length = struct.unpack("<4Q", read_ram(host, lu_start, 32))
    mfns = struct.unpack("<%dQ" % -(-length // 4096), read_ram(host, array, 8 * -(-length // 4096)))
    at = mfns[len(mfns) // 2] * 4096 + 100
    write_ram(host, at, bytes([read_ram(host, at, 1)[0] ^ 0xFF]))
    res = host.hyperv_sim("recover", "--image", str(sim_images["4.19"]))
    assert res.returncode == 1 and "does not match its breadcrumb hash" in res.stderr, res
    assert breadcrumb_magic(host, lu_start) == abi.LU_BREADCRUMB_MAGIC
    res = host.hyperv_sim("info")
    assert res.returncode == 1 and "halted" in res.stderr
    # The stream it found is there to read; one flipped byte either still
    # frames (then every domain is listed) or is named with its offset.
    dump = host.hyperv_sim("stream", "dump")
    if dump.returncode == 0:
        assert dump.stdout.count("LU_DOMAIN") == 4
    else:
        assert dump.returncode == 1 and "invalid stream: record" in dump.stderr, dump
    # No image can restore a corrupted stream: recovery says so and keeps RAM.
    res = host.hyperv_sim("recover", "--image", str(sim_images["4.18"]))
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1, res
    assert "failed too" in res.stderr and "breadcrumb hash" in res.stderr
    assert (host.state_dir / "ram").exists()


def test_recover_refuses_a_running_host(lu_host, sim_images, tmp_path):
    res = lu_host.hyperv_sim("recover", "--image", str(sim_images["4.19"]))
    assert res.returncode == 1 and "running, not halted" in res.stderr
    assert_healthy(lu_host)


def test_a_second_exec_while_one_runs_is_busy(tmp_path, sim_images):
    state = tmp_path / "slow"
    host = boot_host(state, sim_images["4.18"], memory=2 << 30,
                     cmdline="liveupdate=64M dom0_mem=256M lu_quiesce_timeout=3000")
    try:
        host.toolstack("create", name="hvm", type="hvm", memory=128 << 20, vcpus=1)
        host.load_lu(sim_images["4.19"])
        # With dom0 (the device model) paused, the HVM guest cannot reach a
        # restartable boundary: the update waits, then gives up.
        host.toolstack("pause", domain="0")
        wait_blocked_on_io(host, "hvm")
        host.client.kexec_exec(abi.KEXEC_TYPE_LIVEUPDATE)
        res = host.kexec_lu("exec")
        assert res.returncode == 2, res
        assert "in progress" in res.stderr and len(res.stderr.splitlines()) == 1
        res = host.hyperv_sim("create", "--memory", "64", "late")
        assert res.returncode == 2 and "in progress" in res.stderr
        deadline = time.monotonic() + 30
        while host.toolstack("lu-report")["state"] == "running":
            assert time.monotonic() < deadline, "the update never gave up"
            time.sleep(0.05)
        assert host.toolstack("lu-report")["state"] == "aborted"
        host.toolstack("unpause", domain="0")
        assert_healthy(host)
    finally:
        stop_host(state)
