"""xen#2's boot after a live update: map the stream through the breadcrumb,
check all of it, restore every domain, release the stream, resume the
guests, and report each phase under xen#1's update id.

Hypervisor._boot calls boot_from_stream(hv) when its command line carries
liveupdate=<size>M@<base>.  A refusal or an injected fault before the stream
is released halts xen#2 with RAM and breadcrumb intact (RestoreHalted), for
`hyperv-sim recover` and `hyperv-sim stream dump`.
"""
from xen_public.abi import DOMID_INVALID, PAGE_SIZE

from .._lu_core import lib
from .._lu_hw import lib as hw
from ..entry import check_bootmem
from ..errors import BootFailure, RestoreHalted
from ..faultpoints import FORBIDDEN_ACTS
from ..frametable import FrameAllocator, RefError
from ..iommu import forbidden_act
from ..sched import unpause_vcpus
from . import handover
from .apply import restore
from .check import check, decode, prefault_frametable
from .mapped import MappedStream
from .report import InjectedFault, Report
from .stream import RestoreFailure, StreamError


def boot_from_stream(hv):
    t0 = lib.lu_now_ns()
    try:
        check_bootmem(hv.entered)
    except BootFailure as e:
        raise RestoreHalted("live-update restore refused: %s (RAM and breadcrumb left intact)" % e)
    hv.lu_report = rep = Report()
    hv.lu_start = hv.opts.liveupdate_base
    # Whatever lies between the bootmem xen#1 named and this image is
    # bootmem too (freed image space), so the next window is contiguous.
    hv.lu_size = max(hv.opts.liveupdate_size, hv.xen_start - hv.lu_start)
    rep.info.update(to_version=hv.personality.version, xen2_start_ns=t0)
    stream, facts, prefault, first_pause = _restore_or_halt(hv, rep, t0)
    prefault.join()
    rep.phase("release-stream")
    _release_stream(hv, stream)
    rep.phase("unpause")
    held = _interrupts_on_resume(hv)
    done = _resume_guests(hv)
    hv.iommu.start_delivery()
    if hv.opts.lu_fault in FORBIDDEN_ACTS:
        forbidden_act(hv, hv.opts.lu_fault)
    # The frame-table entries nothing reads before now: HVM and PVH guests'
    # memory (apply.py), then the free frames.
    rep.phase("frametable-deferred")
    with hv.lock:
        hv.frametable.write_pending()
        _rebuild_free_entries(hv, facts.free)
        hv.allocator = FrameAllocator(hv.frametable, facts.free + list(stream.extents()))
    # xen#1's private frames (the stream, staging copies, its notes) are free now but
    # not clean: scrub every free frame, after the guests run again and
    # before anyone can ask for memory (privcmd is not up yet).
    rep.phase("scrub")
    handover.clear_boot_information(hv.ram, hv.entered.info)
    with hv.lock:
        for mfn, count in hv.allocator.free_extents():
            hv.ram.scrub(mfn * PAGE_SIZE, count * PAGE_SIZE)
        # Xen's own data pages (crash notes, vmcoreinfo) need no guest
        # paused: taken here, outside the blackout, with their disk.
        hv.allocate_xen_data_pages()
        _adopt_crash_image(hv, rep, facts.crash_image)
    _report_complete(hv, rep, facts, t0, done, first_pause, held)


def _devices_in_blackout(hv, first_pause, done, held):
    """What each passthrough device did while no hypervisor ran its guests:
    it ran on, doing DMA through the IOMMU xen#1 left."""
    running = hv.devices.slots()
    out = []
    for bdf in sorted(b for b in hv.pci_assigned if b in running):
        ops, gap, dropped = hv.devices.window(bdf, first_pause, done)
        out.append({"bdf": bdf, "dma_ops_in_blackout": ops, "max_dma_stall_ms": gap / 1e6,
                    "dropped": dropped, "interrupts_held": held.get(bdf, 0)})
    return out


def _adopt_crash_image(hv, rep, image):
    """The crash image xen#1 carried is loaded here too if the crash region
    still holds its bytes (a digest over them, taken with the guests
    running); otherwise it is dropped, said once, and the update goes on."""
    if image is None:
        rep.info["crash_image"] = "none"
        return
    if hv.kexec.adopt(image):
        rep.info["crash_image"] = "carried"
        hv.console.log("kexec: crash image carried over: %d segments, %d KiB, entry 0x%x",
                       len(image.segments), image.size >> 10, image.entry)
    else:
        rep.info["crash_image"] = "dropped"
        rep.info["crash_image_why"] = ("the crash region no longer holds the bytes it was loaded "
                                       "with (SHA-256 differs): load it again")
        hv.console.log("kexec: crash image dropped: %s", rep.info["crash_image_why"])


def _restore_or_halt(hv, rep, t0):
    """Map, check and restore; -> (stream, facts, prefault thread, the
    moment xen#1 first paused a vCPU).  Raises RestoreHalted."""
    def fault(point):
        _stop_if_asked(hv, point)
        if hv.opts.lu_fault == point:
            raise InjectedFault(point)
    stream = None
    try:
        fault("restore-start")
        rep.phase("map-stream")
        stream = MappedStream(hv.ram, hv.lu_start, hv.lu_size, hv.xen_start, hv.xen_size)
        rep.phase("validate")
        fault("restore-validate")
        system, plans = decode(stream.buf, hv.personality.lu_records)
        prefault = prefault_frametable(hv, system, plans)
        xen_frames = -(-(hv.xen_start + hv.xen_size) // PAGE_SIZE) - hv.xen_start // PAGE_SIZE
        facts = check(hv, system, plans, stream, (hv.lu_start // PAGE_SIZE, hv.lu_size // PAGE_SIZE),
                          (hv.xen_start // PAGE_SIZE, xen_frames))
        first_pause = _report_xen1(hv, rep, stream, facts, t0)
        restore(hv, stream, plans, facts, fault)
        # Every domain is rebuilt; until the stream is released a failure
        # here still leaves RAM and breadcrumb for a recovery.
        fault("unpause")
    except (RestoreFailure, StreamError, InjectedFault, RefError) as e:
        raise _halted(hv, rep, stream, e)
    return stream, facts, prefault, first_pause


def _stop_if_asked(hv, point):
    if hv.opts.lu_stop == point:
        import os
        import signal       # here: its import (enum) costs 2 ms of blackout
        hv.console.log("lu_stop=%s: stopped (SIGSTOP) at %s", point, point)
        os.kill(os.getpid(), signal.SIGSTOP)


def _rebuild_free_entries(hv, free):
    """The free frames' part of the deferred frame-table rebuild, as Linux
    defers its struct pages: the entries of the frames nobody claims,
    O(host RAM), written once the guests run again.  Until then the
    allocator holds nothing (_release_stream), so a frame whose entry is
    not rebuilt is never handed out, and nothing else reads those entries:
    the privcmd socket is not up.  It writes no guest's byte, so a stop or
    a crash here leaves every guest's memory as the guest left it.
    lu_stop stops it halfway."""
    for i, part in enumerate(_halves(free)):
        if i:
            _stop_if_asked(hv, "frametable-deferred")
        for first, n in part:
            hv.frametable.mark_unmapped(first, n, DOMID_INVALID, lib.LU_USE_FREE)


def _halves(extents):
    """The extents cut at their middle frame: (first half, second half)."""
    half, done, low, high = sum(n for _, n in extents) // 2, 0, [], []
    for first, n in extents:
        cut = min(n, max(0, half - done))
        if cut:
            low.append((first, cut))
        if n > cut:
            high.append((first + cut, n - cut))
        done += n
    return low, high


def _report_xen1(hv, rep, stream, facts, t0):
    """xen#1's phases into the report, then its hand-over (to the jump),
    the exec and this process's start-up, up to t0; -> first pause."""
    rep.id = facts.update_id if facts.update_id is not None else rep.id
    rep.info.update(from_version=facts.xen1_version, stream_bytes=len(stream.buf),
                    stream_pages=len(stream.mfns))
    xen1 = [[n.rstrip(b"\0").decode(), a, b] for n, a, b in facts.timings]
    first_pause = next((a for n, a, b in xen1 if n == "first-pause"), None)
    xen1 = [p for p in xen1 if p[0] != "first-pause"]
    exec_ns, save_end = stream.breadcrumb["exec_ns"], stream.breadcrumb["save_end_ns"]
    if xen1 and xen1[-1][0] == "save" and save_end:
        xen1[-1][2] = save_end
    if xen1 and exec_ns:
        started = hv.started_ns if hv.started_ns and exec_ns <= hv.started_ns <= t0 else None
        xen1 += [["handover", xen1[-1][2], exec_ns]]
        xen1 += [["exec", exec_ns, started], ["start-up", started, t0]] if started else \
            [["exec", exec_ns, t0]]
    rep.phases[:0] = xen1
    return first_pause


def _halted(hv, rep, stream, e):
    """The RestoreHalted to raise: the reason, the stream found (read now
    if the failure came before it was, so that `stream dump` shows what a
    recovery will find) and where this hypervisor was booted."""
    rep.finish("halted", str(e))
    why = "live-update restore failed: %s (RAM and breadcrumb left intact)" % e
    hv.history.record(dict(rep.to_json(), error=why))      # as the halted host reports it
    if stream is None and not isinstance(e, RestoreFailure):
        try:
            stream = MappedStream(hv.ram, hv.lu_start, hv.lu_size, hv.xen_start, hv.xen_size)
        except (RestoreFailure, StreamError):
            pass
    found = getattr(e, "buf", None) or (stream.buf if stream else None)
    facts = {"cmdline": hv.cmdline, "xen_start": hv.xen_start, "xen_size": hv.xen_size,
             "lu_start": hv.lu_start, "lu_size": hv.lu_size, "ram": hv.ram.path,
             "report": rep.to_json()}
    return RestoreHalted(why, stream=found, facts=facts)


def _release_stream(hv, stream):
    """The breadcrumb goes, and the stream's frames become free memory.
    They still hold guest state: the scrub after the guests run (boot
    from stream, "scrub") clears every free frame before anyone can ask
    for one, so the hole punching (slow beside a RAM file's writeback)
    stays out of the blackout."""
    rep = hv.lu_report
    rep.info["xen2_guest_bytes_written"] = 0

    def count(maddr, length):
        rep.info["xen2_guest_bytes_written"] += hv.frametable.guest_bytes(maddr, length)
    hv.ram.on_write = count
    # The commit: until here a recover can start over from RAM; from here
    # this process holds the only copy of the domains' state, as any
    # running hypervisor does.  The breadcrumb goes before the stream; this
    # boot's boot information after the guests run (scrub, below): without
    # a breadcrumb it names nothing pending.
    handover.clear_breadcrumb(hv)
    for mfn, n in stream.extents():
        hv.frametable.mark(mfn, n, DOMID_INVALID, lib.LU_USE_FREE)
    # Nothing to hand out until the free frames' entries are rebuilt
    # ("frametable-deferred", after the guests run).
    hv.allocator = FrameAllocator(hv.frametable, [])
    hv.ram.on_write = None


def _resume_guests(hv):
    """Every domain that was running runs again; -> the moment it did."""
    hv.adopt_restored_domains()
    for dom in hv.domains.values():
        if not dom.paused and not dom.dying:
            unpause_vcpus(dom.vcpu_list())
    hv.sched.start()
    return lib.lu_now_ns()


def _interrupts_on_resume(hv):
    """What the devices' guests missed while no hypervisor ran them; ->
    {bdf: interrupts held across the hand-over}.  This interrupt controller
    starts empty: a remapped interrupt sent in the blackout is gone, so each
    device whose interrupts are not posted gets one injected, as the design
    says; a posted one waits in its descriptor, for its vCPU to take."""
    held = {}
    slots = hv.devices.slots()
    for bdf, slot in slots.items():
        hw.lu_hw_take_irr(hv.chipset.c, slot)       # lost with the old hypervisor's CPU state
        if hv.opts.lu_fault == "iommu-scrub-pi" and bdf == min(slots):
            hv.ram.zero(hv.iommu.pi_desc_addr(slot), hw.LU_PI_DESC_SIZE)
        if hv.iommu.posted(slot):
            held[bdf] = hw.lu_hw_posted(hv.iommu.pi_desc(slot))
        elif hv.opts.lu_fault != "iommu-drop-resume-interrupt":
            hv.iommu.inject(slot)
            held[bdf] = 1
        else:
            held[bdf] = 0
    return held


def _report_complete(hv, rep, facts, t0, done, first_pause, held):
    rep.finish("complete")
    if first_pause is not None:
        rep.info["blackout_ms"] = (done - first_pause) / 1e6
        rep.info["devices"] = _devices_in_blackout(hv, first_pause, done, held)
    for name, start, end in rep.phases:
        hv.console.log("live update phase %-19s %9.2f ms", name, ((end or start) - start) / 1e6)
    rep.info["restored_domains"] = len(hv.domains)
    hv.history.record(rep.to_json())
    hv.console.log("live update from Xen %s complete: %d domains restored in %.1f ms, "
                   "blackout %.1f ms", facts.xen1_version, len(hv.domains),
                   (done - t0) / 1e6, rep.info.get("blackout_ms", 0.0))
