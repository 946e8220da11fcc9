"""Passthrough devices as hardware (docs/iommu.md): each a process of its
own, doing DMA into its guest through the IOMMU all the time, through a
live update and a rollback without a pause or a fault; stopped when its
domain goes or the host powers off, and left running when the hypervisor
is killed.  Each act the seed forbids xen#2, done on purpose, is caught by
`verify`, naming the device and the IOVA."""
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import jsonschema
import pytest

from hyperv_sim._lu_hw import lib as hw
from hyperv_sim.chipset import bdf_text
from xen_public.units import MiB

from helpers import REPO, dev_page, boot_host, chipset_of, device_pids, dma_ops, irqs_taken, nic_traffic, read_ram, \
    stop_host, wait_for, write_ram

DEVICES = {"hvm1": "0000:03:00.0", "hvm2": "0000:03:01.0", "pv1": "0000:04:00.0"}


@pytest.fixture(params=["intpost", "no-intpost"])
def dev_host(tmp_path, sim_images, request):
    """Posted interrupts on, or off (xen#2 then injects one per device)."""
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30,
                     cmdline="liveupdate=64M dom0_mem=128M iommu=" + request.param)
    host.intpost = request.param == "intpost"
    try:
        for name, bdf in DEVICES.items():
            host.toolstack("create", name=name, type=name[:-1], memory=32 * MiB, vcpus=1, pci=[bdf])
        # Each device process up (its interpreter started) and writing.
        wait_for(lambda: set(device_pids(state)) == set(DEVICES.values()) and
                 all(dma_ops(host).get(b, 0) > 0 for b in DEVICES.values()), "every device to run")
        yield host
    finally:
        stop_host(state)
    assert device_pids(state) == {}, "a device outlived its host's power-off"


def test_each_device_is_a_process_of_its_own_doing_dma(dev_host):
    pids = device_pids(dev_host.state_dir)
    assert set(pids) == set(DEVICES.values())
    info = dev_host.toolstack("info")
    assert info["pid"] not in pids.values()
    # What `ps` finds, info says: each device, its domain and its process.
    doms = {d["name"]: d["domid"] for d in dev_host.toolstack("list")}
    assert [(d["bdf"], d["domid"], d["pid"]) for d in info["devices"]] == sorted(
        (bdf, doms[name], pids[bdf]) for name, bdf in DEVICES.items())
    line = dev_host.hyperv_sim("info", "devices").stdout.strip()
    shown = [re.fullmatch(r"(\S+) d(\d+) pid (\d+) rx (\d+) dropped (\d+) tx (\d+)", x) for x in line.split(", ")]
    assert all(shown), line
    assert [(m[1], int(m[2]), int(m[3])) for m in shown] == sorted(
        (bdf, doms[name], pids[bdf]) for name, bdf in DEVICES.items()), line
    # list -v names each domain's device.
    rows = {r.split()[0]: r.split()[-1] for r in dev_host.hyperv_sim("list", "-v").stdout.splitlines()[1:]}
    assert rows == dict(DEVICES, **{"Domain-0": "-"}), rows
    first = dma_ops(dev_host)
    wait_for(lambda: all(n > first[b] + 10 for b, n in dma_ops(dev_host).items()), "DMA from every device")
    rep = dev_host.toolstack("verify")
    assert rep["ok"], rep["problems"]


def test_devices_run_through_an_update_and_a_rollback(dev_host, sim_images):
    pids = device_pids(dev_host.state_dir)
    for image in (sim_images["4.19"], sim_images["4.18"]):
        dev_host.load_lu(image)
        res = dev_host.kexec_lu("exec", "--json")
        assert res.returncode == 0, res
        rep = json.loads(res.stdout)
        assert rep["state"] == "complete"
        jsonschema.validate(rep, json.loads((REPO / "schemas" / "kexec-lu-exec.schema.json").read_text()))
        by_bdf = {d["bdf"]: d for d in rep["devices"]}
        assert set(by_bdf) == set(DEVICES.values())
        before = nic_traffic(dev_host)
        for bdf, d in by_bdf.items():
            # It kept doing DMA while no hypervisor ran its guest.
            assert d["dma_ops_in_blackout"] > 0, (bdf, d, rep["blackout_ms"])
            assert d["max_dma_stall_ms"] < rep["blackout_ms"], (bdf, d)
            # A packet a round: those its paused guest had no buffer for
            # were dropped, and counted.
            assert 0 < d["dropped"] <= d["dma_ops_in_blackout"], (bdf, d, rep["blackout_ms"])
            assert d["dropped"] <= before[bdf]["device_dropped"], (bdf, d, before[bdf])
            # Its interrupt across the hand-over: one posted and waiting, or
            # (no posted interrupts) one injected.
            assert d["interrupts_held"] == 1, (bdf, d)
        # And the guests take interrupts again: each record counts on.
        taken = irqs_taken(dev_host)
        wait_for(lambda: all(n > taken[b] for b, n in irqs_taken(dev_host).items()), "interrupts after the update")
        # Traffic on: every number up to the last packet taken was received
        # once and intact, or dropped by the device and said so.
        wait_for(lambda: all(t["rx_ok"] > before[b]["rx_ok"] and t["tx_sent"] > before[b]["tx_sent"]
                             for b, t in nic_traffic(dev_host).items()), "packets after the update")
        for bdf, t in nic_traffic(dev_host).items():
            assert t["bad"] == t["out_of_order"] == 0, (bdf, t)
            assert t["rx_ok"] + t["dropped_seen"] == t["last_seq"], (bdf, t)
            assert t["dropped_seen"] <= t["device_dropped"], (bdf, t)
        # The same processes: a live update restarts no device.
        assert device_pids(dev_host.state_dir) == pids
        verify = dev_host.toolstack("verify")
        assert verify["ok"], verify["problems"]
    text = dev_host.kexec_lu("load", str(sim_images["4.19"]))
    assert text.returncode == 0, text
    out = dev_host.kexec_lu("exec").stdout
    for bdf in DEVICES.values():
        assert re.search(r"^device %s: \d+ rounds? of DMA during the blackout, longest stall [0-9.]+ ms, "
                         r"\d+ packets? dropped for a full ring, 1 interrupt held$" % re.escape(bdf), out, re.M), out


@pytest.mark.parametrize("dev_host", ["intpost"], indirect=True)
def test_verify_catches_a_corrupted_a_repeated_and_a_lost_packet(dev_host):
    """What the guests' drivers catch, verify says: a packet changed on its
    way (hvm1's), one delivered twice in place of the next (hvm2's, which
    loses that next one too).  Done while the guests are paused, their
    rings full, to packets they have yet to take."""
    details = {x["name"]: x for x in dev_host.toolstack("details")["domains"]}
    victims = {"hvm1": DEVICES["hvm1"], "hvm2": DEVICES["hvm2"]}
    for name in victims:
        assert dev_host.hyperv_sim("pause", name).returncode == 0
    wait_for(lambda: all(t["device_dropped"] > 0 for b, t in nic_traffic(dev_host).items() if b in victims.values()),
             "full rings")
    taken = {}
    for name, bdf in victims.items():
        page = dev_page(dev_host, details[name], bdf)
        rx_taken, = struct.unpack("<I", read_ram(dev_host, page + 192 + 4, 4))
        taken[name] = rx_taken
        # The RX buffers: the page after, by the guest's P2M.
        gfn = details[name]["layout"]["dma_gfn"] + 1
        buffers = next(m + gfn - g for g, m, n in details[name]["p2m"] if g <= gfn < g + n) * 4096
        first, second = buffers + rx_taken % 64 * 64, buffers + (rx_taken + 1) % 64 * 64
        if name == "hvm1":
            raw = bytearray(read_ram(dev_host, first, 64))
            raw[30] ^= 0xFF
            write_ram(dev_host, first, bytes(raw))
        else:
            write_ram(dev_host, second, read_ram(dev_host, first, 64))
    for name in victims:
        assert dev_host.hyperv_sim("unpause", name).returncode == 0
    wait_for(lambda: all(nic_traffic(dev_host)[b]["rx_ok"] > taken[n] + 2 for n, b in victims.items()),
             "the guests to take them")
    rep = dev_host.toolstack("verify")
    assert not rep["ok"]
    problems = sorted(p["detail"] for p in rep["problems"])
    seq1 = nic_traffic(dev_host)[victims["hvm1"]]
    assert len(problems) == 2, problems
    assert re.fullmatch(r"device %s: 1 packet arrived corrupted in the guest \(the first: packet \d+\)"
                        % victims["hvm1"], problems[0]), problems
    assert re.fullmatch(r"device %s: 2 packets not the one due \(the first: packet (\d+) where (\d+) was due\): "
                        r"lost, or received twice" % victims["hvm2"], problems[1]), problems
    got, due = map(int, re.search(r"packet (\d+) where (\d+)", problems[1]).groups())
    assert due == got + 1, problems[1]
    assert seq1["bad"] == 1 and seq1["out_of_order"] == 0, seq1


@pytest.mark.parametrize("dev_host", ["intpost"], indirect=True)
def test_verify_catches_rings_out_of_step_and_a_corrupted_send(dev_host):
    """The rings' indices, written from outside while the guests are
    paused: more filled than hvm1's driver could have taken, more queued
    than pv1's ring holds; and a corrupted packet queued in pv1's name,
    which the device sends and counts."""
    details = {x["name"]: x for x in dev_host.toolstack("details")["domains"]}
    for name in ("hvm1", "pv1"):
        assert dev_host.hyperv_sim("pause", name).returncode == 0
    hvm1, pv1 = DEVICES["hvm1"], DEVICES["pv1"]
    wait_for(lambda: all(nic_traffic(dev_host)[b]["device_dropped"] > 0 for b in (hvm1, pv1)), "full rings")
    page = {b: dev_page(dev_host, details[n], b) for n, b in (("hvm1", hvm1), ("pv1", pv1))}
    indices = struct.Struct("<IIII")         # RX posted, RX filled, TX queued, TX sent
    rx_taken, = struct.unpack("<I", read_ram(dev_host, page[hvm1] + 192 + 4, 4))
    write_ram(dev_host, page[hvm1] + 128 + 4, struct.pack("<I", rx_taken + 100))
    posted, filled, queued, sent = indices.unpack(read_ram(dev_host, page[pv1] + 128, 16))
    assert queued == sent
    gfn = details["pv1"]["layout"]["dma_gfn"] + 2      # the TX buffers
    tx = next(m + gfn - g for g, m, n in details["pv1"]["p2m"] if g <= gfn < g + n) * 4096 + queued % 64 * 64
    write_ram(dev_host, tx, struct.pack("<QQQ", queued + 1, 0, 0) + bytes(36) + b"\xde\xad\xbe\xef")
    write_ram(dev_host, page[pv1] + 128 + 8, struct.pack("<I", queued + 1))
    wait_for(lambda: indices.unpack(read_ram(dev_host, page[pv1] + 128, 16))[3] == queued + 1, "the send")
    write_ram(dev_host, page[pv1] + 128 + 8, struct.pack("<I", queued + 101))
    rep = dev_host.toolstack("verify")
    assert not rep["ok"]
    assert sorted(p["detail"] for p in rep["problems"]) == [
        "device %s: 100 packets filled and not taken: more than a ring of 64" % hvm1,
        "device %s sent 1 corrupted and 0 out-of-order packets the guest queued" % pv1,
        "device %s: 100 packets queued and not sent: more than a ring of 64" % pv1]


def test_a_destroyed_domains_device_stops(dev_host):
    pids = device_pids(dev_host.state_dir)
    dev_host.toolstack("destroy", domain="pv1")
    wait_for(lambda: not os.path.exists("/proc/%d" % pids["0000:04:00.0"]), "the device to stop")
    assert set(device_pids(dev_host.state_dir)) == {"0000:03:00.0", "0000:03:01.0"}
    assert "0000:04:00.0" not in dma_ops(dev_host)
    rep = dev_host.toolstack("verify")
    assert rep["ok"], rep["problems"]


def test_a_killed_hypervisor_leaves_its_devices_running(dev_host, sim_images):
    """Hardware outlives the hypervisor: kill -9 stops no device; throwing
    the machine away (boot --discard) does."""
    pids = device_pids(dev_host.state_dir)
    os.kill(dev_host.toolstack("info")["pid"], signal.SIGKILL)
    time.sleep(0.05)
    before = dma_ops(dev_host)
    wait_for(lambda: all(n > before[b] for b, n in dma_ops(dev_host).items()), "DMA with no hypervisor")
    assert device_pids(dev_host.state_dir) == pids
    res = dev_host.hyperv_sim("boot", "--discard", "--memory", "1G", str(sim_images["4.18"]))
    assert res.returncode == 0, res
    assert device_pids(dev_host.state_dir) == {}
    assert all(not os.path.exists("/proc/%d/cmdline" % p) or not open("/proc/%d/cmdline" % p).read()
               for p in pids.values())


# Each act on the kind of host it concerns: a descriptor scrubbed where
# interrupts are posted, the injection dropped where they are not.
@pytest.mark.parametrize("dev_host, act, words", [
    ("intpost", "iommu-zero-table", "no mapping"),
    ("intpost", "iommu-rewrite-root", "root entry not present"),
    ("no-intpost", "iommu-flush-rebuild", "no mapping"),
    ("intpost", "iommu-scrub-pi", "was lost"),
    ("no-intpost", "iommu-drop-resume-interrupt", "was lost"),
], indirect=["dev_host"])
def test_each_forbidden_act_is_caught(dev_host, sim_images, act, words):
    load = dev_host.kexec_lu("load", "--append", "lu_fault=" + act, str(sim_images["4.19"]))
    assert load.returncode == 0, load
    res = dev_host.kexec_lu("exec")
    assert res.returncode == 0, res
    chipset = chipset_of(dev_host)
    try:
        iova = {bdf_text(d.sid): d.dma_iova for d in chipset.c.dev if d.state}
    finally:
        chipset.close()
    victim = sorted(DEVICES.values())[0]
    if words == "was lost":
        time.sleep(0.05)            # long enough (> 50 writes) to call it lost
        rep = dev_host.toolstack("verify")
        lost = [p["detail"].split(": ")[0] for p in rep["problems"] if "was lost" in p["detail"]]
        if act == "iommu-scrub-pi":
            assert lost == ["device " + victim], rep["problems"]
        else:
            # Every device whose interrupt waited for the old hypervisor's CPU
            # when interrupts went off; one already posted to its guest was
            # not owed (with three devices, some are always caught).
            assert lost and set(lost) <= {"device " + b for b in DEVICES.values()}, rep["problems"]
        return
    rep = dev_host.toolstack("verify")
    assert not rep["ok"]
    details = [p["detail"] for p in rep["problems"]]
    # A round's first DMA: the ring indices in the NIC's first page.
    want = "device %s: IOMMU fault on write at IOVA 0x%x: %s" % (victim, iova[victim] + hw.LU_NIC_INDICES, words)
    assert want in details, details
    if act == "iommu-rewrite-root":
        assert any("root-table pointer latched 3 times" in d for d in details), details
    if act == "iommu-flush-rebuild":
        assert any("whole IOTLB invalidated 3 times" in d for d in details), details


def test_devices_stop_when_their_machine_is_gone(dev_host):
    """A host removed without a power-off (its hypervisor killed, its files
    deleted by hand): its devices notice their chipset is gone and stop."""
    pids = device_pids(dev_host.state_dir)
    os.kill(dev_host.toolstack("info")["pid"], signal.SIGKILL)
    for name in ("chipset", "ram"):
        os.unlink(dev_host.state_dir / name)
    wait_for(lambda: device_pids(dev_host.state_dir) == {}, "the devices to stop", timeout=5)
    assert all(not os.path.exists("/proc/%d/cmdline" % p) or not open("/proc/%d/cmdline" % p).read()
               for p in pids.values())


def test_an_aborted_update_turns_interrupts_back_on(dev_host, sim_images):
    """Interrupts go off as the quiesce starts; an update undone before the
    point of no return turns them on again (on a host without posted
    interrupts the hypervisor's handler must run again, or the devices
    would starve)."""
    assert dev_host.load_lu(sim_images["4.19"])
    dev_host.toolstack("lu-fault", point="save")
    res = dev_host.kexec_lu("exec")
    assert res.returncode == 1 and "injected fault at save" in res.stderr, res
    taken = irqs_taken(dev_host)
    wait_for(lambda: all(n > taken[b] for b, n in irqs_taken(dev_host).items()), "interrupts again")
    time.sleep(0.05)
    rep = dev_host.toolstack("verify")
    assert rep["ok"], rep["problems"]


@pytest.mark.parametrize("dev_host", ["no-intpost"], indirect=True)
def test_xen2_heeds_the_remapping_table_not_its_own_option(dev_host, sim_images):
    """xen#2 booted with iommu=intpost over a table xen#1 wrote without
    posted interrupts: the entries stay as they are, so xen#2 must run the
    handler they need, or its devices would starve."""
    load = dev_host.kexec_lu("load", "--command-line", "dom0_mem=128M iommu=intpost", str(sim_images["4.19"]))
    assert load.returncode == 0, load
    res = dev_host.kexec_lu("exec")
    assert res.returncode == 0, res
    taken = irqs_taken(dev_host)
    wait_for(lambda: all(n > taken[b] + 5 for b, n in irqs_taken(dev_host).items()), "interrupts after the update")
    time.sleep(0.05)
    rep = dev_host.toolstack("verify")
    assert rep["ok"], rep["problems"]


def test_a_device_past_the_chipsets_slots_is_refused_in_one_line(tmp_path, sim_images):
    """Sixteen devices fit in the chipset; a seventeenth is refused in one
    line, and the refused create leaves nothing: no frame, no process."""
    from helpers import one_line_error
    from xen_public.units import MiB as M
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30, cmdline="liveupdate=64M dom0_mem=128M")
    try:
        for i in range(16):
            host.toolstack("create", name="g%d" % i, type="pv", memory=16 * M, vcpus=1,
                           pci=["0000:05:%02x.0" % i])
        frames = host.toolstack("info")["frames"]
        res = host.hyperv_sim("create", "--type", "pv", "--memory", "16M", "--pci", "0000:06:00.0", "g16")
        one_line_error(res, "hyperv-sim", "no free device slot in the chipset (at most 16 devices)")
        assert host.toolstack("info")["frames"] == frames
        assert len(device_pids(state)) == 16
    finally:
        stop_host(state)
    assert device_pids(state) == {}


@pytest.mark.parametrize("argv, words", [
    (["--bdf", "0000:03:00.0"], "usage: python -I -m hyperv_sim.device"),
    (["--bdf", "0000:03:00.9", "--state-dir", "{d}"], "hyperv-sim device: "),
    (["--bdf", "0000:03:00.0", "--state-dir", "{d}/none"], "cannot map the host's RAM"),
    (["--bdf", "0000:03:00.0", "--state-dir", "{d}/empty"], "cannot map the host's RAM"),
    (["--bdf", "0000:03:00.0", "--state-dir", "{d}/nochipset"], "chipset"),
])
def test_a_device_started_by_hand_without_its_machine_says_so_in_one_line(tmp_path, argv, words):
    """The device's command line is what `ps` shows, so someone will run it
    by hand: with no machine behind it, one line and a non-zero exit,
    nothing created."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "ram").write_bytes(b"")
    (tmp_path / "nochipset").mkdir()
    (tmp_path / "nochipset" / "ram").write_bytes(bytes(4096))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        res = subprocess.run([sys.executable, "-I", "-m", "hyperv_sim.device"] +
                             [a.format(d=tmp_path) for a in argv],
                             capture_output=True, text=True, cwd=tmp_path, timeout=30)
        assert res.returncode != 0, res
        assert res.stderr.count("\n") == 1 and words in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    finally:
        for ram in tmp_path.rglob("ram"):       # no host RAM left behind (conftest checks)
            ram.unlink()
