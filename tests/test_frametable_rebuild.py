"""xen#2 rebuilds the frame table from records and never trusts xen#1's
entries (DESIGN invariant 3).

xen#1's frame-table region is handed over for xen#2 to rebuild in place.
Here xen#2 halts before it reads anything (lu_fault=restore-start); while it
is halted, every entry of that region is overwritten with garbage; then
`hyperv-sim recover` starts a hypervisor on the same RAM.  If any entry of
xen#1's table were kept rather than rewritten from the stream, the poison
would still be there, the frame histogram and memory map would differ and
`verify` (every frame's owner, type and counts against a fresh walk) would
object.
"""
import random
import time

import pytest

from bench.reference import FRAME         # struct lu_frame
from hyperv_sim._lu_core import lib
from hyperv_sim.frametable import PGC_ALLOCATED
from hyperv_sim.guest import IO_EVERY
from xen_public.abi import PAGE_SIZE
from kexec_lu.liveupdate import run_live_update

from conftest import boot_host, stop_host

GUESTS = [
    dict(name="pv", type="pv", memory=64 << 20, vcpus=2),
    dict(name="hvm", type="hvm", memory=64 << 20, vcpus=1, pci=["0000:03:00.0"]),
    dict(name="pvh", type="pvh", memory=64 << 20, vcpus=1, event_channel_abi="fifo", grant_version=2),
    dict(name="paused", type="hvm", memory=32 << 20, vcpus=1),
    dict(name="dying", type="pv", memory=32 << 20, vcpus=1),
]
# A marked reserved word: xen#2 writes 0 there in every entry and verify
# never reads it, so a plausible entry left in place still shows.
RESERVED_POISON = 0x5A5A5A5A


def random_poison(nr_frames, size, domid):
    """Random bytes: owners, uses, types and counts nothing could restore."""
    return random.Random(nr_frames).randbytes(size)


def plausible_poison(nr_frames, size, domid):
    """Every frame an allocated guest frame of one domain, with just the
    counts verify expects of such a frame: only a table rewritten from the
    records, free frames included, gets rid of it."""
    entry = FRAME.pack(domid, lib.LU_USE_GUEST, 0, 0, PGC_ALLOCATED | 1, RESERVED_POISON)
    return entry * nr_frames + bytes(size - nr_frames * FRAME.size)


def domains(host):
    return {d["name"]: d for d in host.toolstack("list")}


def wait_steps(host, since, timeout=10):
    """Until every domain running at `since` has taken steps beyond it."""
    deadline = time.monotonic() + timeout
    while True:
        now = domains(host)
        if all(now[n]["steps"] > d["steps"] for n, d in since.items() if d["state"] == "running"):
            return now
        assert time.monotonic() < deadline, "domains do not run: %s" % now
        time.sleep(0.02)


def read_region(host, start, size):
    with open(host.state_dir / "ram", "rb") as ram:
        ram.seek(start)
        return ram.read(size)


@pytest.mark.parametrize("poison", [random_poison, plausible_poison])
def test_xen2_rebuilds_the_frame_table_and_keeps_nothing_of_xen1s(tmp_path, sim_images, poison):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30,
                     cmdline="liveupdate=64M dom0_mem=128M crashkernel=16M lu_quiesce_timeout=2000")
    try:
        for g in GUESTS:
            host.toolstack("create", **g)
        wait_steps(host, domains(host))
        # Still mapped by dom0's backend, a dying domain keeps its frames.
        host.toolstack("pause", domain="paused")
        host.toolstack("destroy", domain="dying", detach=False)
        before = domains(host)
        # Before the image is loaded: its staging frames are gone after the
        # update, and xen#2 (the same image as xen#1 here) lands where xen#1
        # was, so every frame should have the use it has now.
        info = host.toolstack("info")
        memmap = host.toolstack("memmap")
        region, nr_frames = info["frametable"], info["total_memory"] // PAGE_SIZE
        assert {"guest", "shared", "iommu-pt", "crash", "m2p", "free"} <= set(info["frames"])

        res = host.kexec_lu("load", "--type", "liveupdate", "--reuse-cmdline",
                            "--append", "lu_fault=restore-start", str(sim_images["4.19"]))
        assert res.returncode == 0, res
        rep = run_live_update(host.client, timeout=30)
        assert rep["state"] == "halted" and "injected fault at restore-start" in rep["error"], rep

        # xen#2 is halted and has read nothing: poison xen#1's whole table.
        bad = poison(nr_frames, region["size"], before["pv"]["domid"])
        assert len(bad) == region["size"] >= nr_frames * FRAME.size
        with open(state / "ram", "r+b") as ram:
            ram.seek(region["start"])
            ram.write(bad)
        assert read_region(host, region["start"], region["size"]) == bad

        res = host.hyperv_sim("recover", "--image", str(sim_images["4.18"]))
        assert res.returncode == 0, res
        now = host.toolstack("info")
        assert now["xen_version"] == "4.18" and now["incarnation"] != info["incarnation"]
        # Rebuilt in place, where xen#1's table was.
        assert now["frametable"] == region

        # Not one entry still holds the poison.
        table = read_region(host, region["start"], nr_frames * FRAME.size)
        size = FRAME.size
        kept = [mfn for mfn in range(nr_frames)
                if table[mfn * size:(mfn + 1) * size] == bad[mfn * size:(mfn + 1) * size]]
        assert not kept, "%d entries of xen#1's table kept, first at mfn 0x%x" % (len(kept), kept[0])
        assert not any(reserved for *_, reserved in FRAME.iter_unpack(table))

        # Every frame's use as before the update; owners, types and counts
        # as a fresh walk of every domain says.
        assert now["frames"] == info["frames"]
        assert host.toolstack("memmap") == memmap
        rep = host.toolstack("verify")
        assert rep["ok"], rep["problems"]

        # And the domains run on; the paused and the dying one stay so.
        after = wait_steps(host, before)
        assert {n: d["state"] for n, d in after.items()} == {n: d["state"] for n, d in before.items()}
        assert after["dying"]["steps"] == before["dying"]["steps"]
        # Paused with an I/O request in flight, the quiesce lets it finish
        # that one step.
        paused = before["paused"]["steps"]
        assert after["paused"]["steps"] in (paused, paused + 1)
        assert after["paused"]["steps"] == paused or after["paused"]["steps"] % IO_EVERY == 0
    finally:
        stop_host(state)
