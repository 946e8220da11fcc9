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

import pytest

from bench.reference import FRAME         # struct lu_frame
from hyperv_sim._lu_core import lib
from hyperv_sim.frametable import PGC_ALLOCATED
from hyperv_sim.guest import IO_EVERY
from xen_public.abi import PAGE_SIZE
from kexec_lu.liveupdate import run_live_update

from helpers import boot_host, domains_by_name, read_ram, stop_host, wait_steps, write_ram

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


@pytest.mark.parametrize("poison", [random_poison, plausible_poison])
def test_xen2_rebuilds_the_frame_table_and_keeps_nothing_of_xen1s(tmp_path, sim_images, poison):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30,
                     cmdline="liveupdate=64M dom0_mem=128M crashkernel=16M lu_quiesce_timeout=2000")
    try:
        for g in GUESTS:
            host.toolstack("create", **g)
        wait_steps(host, since=domains_by_name(host), timeout=10)
        # Still mapped by dom0's backend, a dying domain keeps its frames.
        host.toolstack("pause", domain="paused")
        host.toolstack("destroy", domain="dying", detach=False)
        before = domains_by_name(host)
        # Before the image is loaded: its staging frames are gone after the
        # update, and xen#2 (the same image as xen#1 here) lands where xen#1
        # was, so every frame should have the use it has now.
        info = host.toolstack("info")
        memmap = host.toolstack("memmap")
        region, nr_frames = info["frametable"], info["total_memory"] // PAGE_SIZE
        assert {"guest", "shared", "iommu-pt", "crash", "m2p", "free"} <= set(info["frames"])

        host.load_lu(sim_images["4.19"], "--append", "lu_fault=restore-start")
        rep = run_live_update(host.client, timeout=30)
        assert rep["state"] == "halted" and "injected fault at restore-start" in rep["error"], rep

        # xen#2 is halted and has read nothing: poison xen#1's whole table.
        bad = poison(nr_frames, region["size"], before["pv"]["domid"])
        assert len(bad) == region["size"] >= nr_frames * FRAME.size
        write_ram(host, region["start"], bad)
        assert read_ram(host, region["start"], region["size"]) == bad

        res = host.hyperv_sim("recover", "--image", str(sim_images["4.18"]))
        assert res.returncode == 0, res
        now = host.toolstack("info")
        assert now["xen_version"] == "4.18.0" and now["incarnation"] != info["incarnation"]
        # Rebuilt in place, where xen#1's table was.
        assert now["frametable"] == region

        # Not one entry still holds the poison.
        table = read_ram(host, region["start"], nr_frames * FRAME.size)
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
        after = wait_steps(host, since=before, timeout=10)
        assert {n: d["state"] for n, d in after.items()} == {n: d["state"] for n, d in before.items()}
        assert after["dying"]["steps"] == before["dying"]["steps"]
        # Paused with an I/O request in flight, the quiesce lets it finish
        # that one step.
        paused = before["paused"]["steps"]
        assert after["paused"]["steps"] in (paused, paused + 1)
        assert after["paused"]["steps"] == paused or after["paused"]["steps"] % IO_EVERY == 0
    finally:
        stop_host(state)
