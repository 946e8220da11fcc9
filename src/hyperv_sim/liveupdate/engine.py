"""xen#1's side of a live update: pre-flight, quiesce, save, hand-over, exec.

Runs on its own thread once KEXEC_CMD_kexec (type live update) has passed
the pre-flight checks, as Xen updates "when all the domains are quiescent"
rather than inside the hypercall.  Any failure before the point of no return
(copying the new image over the running one) resumes every domain exactly
as it was and says what failed.
"""
import gc
import threading

from xen_public import abi, lustream as ls
from xen_public.abi import PAGE_SIZE

from .._lu_core import lib
from ..entry import check_bootmem, enter
from ..errors import BootFailure
from ..kexec import KexecFailure
from . import handover, save
from .quiesce import Quiesce, QuiesceTimeout
from .report import InjectedFault, Report


class LiveUpdate:
    def __init__(self, hv, fault_point=None):
        self.hv = hv
        self.fault_point = fault_point
        self.report = Report()
        self.report.info["from_version"] = hv.personality.version
        self.image_fingerprint = None     # taken by preflight(); no pre-flight, no exec

    def fault(self, point):
        if self.fault_point == point:
            raise InjectedFault(point)

    # pre-flight: changes nothing; raises KexecFailure naming what blocks

    def preflight(self, dry_run=False):
        """dry_run: the checks alone (kexec-lu check), without warming the
        image's pages or an injected fault."""
        hv = self.hv
        self.report.begin("preflight")
        image = hv.kexec.images.get(abi.KEXEC_TYPE_LIVEUPDATE)
        if image is None:
            raise KexecFailure(abi.ENOENT, "no live-update image loaded")
        if hv.exec_into is None:
            raise KexecFailure(abi.EOPNOTSUPP, "this hypervisor has no process to replace")
        gone = hv.ram.path_problem()
        if gone:
            # xen#2 opens RAM by name, and a recover needs the name too.
            raise KexecFailure(abi.EIO, "%s: no live update can start (xen#2 would find no RAM); "
                               "shut the host down to end it cleanly" % gone)
        # Fingerprinted before the SHA-256 is checked: a change after the
        # fingerprint either fails that check or, later, the cheap one at
        # "image-check", inside the blackout.
        self.image_fingerprint = handover.image_fingerprint(hv, image)
        if not hv.kexec.image_intact(abi.KEXEC_TYPE_LIVEUPDATE):
            raise KexecFailure(abi.EIO, "the loaded image changed in memory since it was loaded")
        p = self._enter_xen2(image).personality
        self.report.info["to_version"] = p.version
        if p.lu_versions is None:
            raise KexecFailure(abi.EOPNOTSUPP, "xen#2 (%s) cannot restore any live-update "
                               "stream (its image has no stream note)" % p.version)
        lo, hi = p.lu_versions
        if not lo <= ls.LU_FORMAT_VERSION <= hi:
            raise KexecFailure(abi.EOPNOTSUPP, "xen#2 restores stream versions %d-%d, this stream "
                               "is version %d" % (lo, hi, ls.LU_FORMAT_VERSION))
        missing = {t: why for t, why in save.needed_record_types(hv).items() if t not in p.lu_records}
        if missing:
            t = min(missing)
            raise KexecFailure(abi.EOPNOTSUPP, "xen#2 (%s) cannot restore %s records, needed "
                               "because %s" % (p.version, ls.record_name(t), missing[t]))
        self._check_bootmem_clean()
        self._note_kexec_images()
        if dry_run:
            self.report.end()
            return
        handover.prefault(hv, image)
        if self.fault_point == "preflight":
            raise KexecFailure(abi.EIO, "injected fault at preflight")
        self.report.end()

    def _enter_xen2(self, image):
        """Every check xen#2 makes when it is entered, made now on the bytes
        the load will put in RAM (hyperv_sim/entry.py, the one reader both
        use), and where they lie against this host: an entry xen#2 could
        not boot from is refused here, before any domain is paused."""
        hv = self.hv
        try:
            entered = enter(hv.kexec.reader(image), image.entry, hv.ram.size)
            check_bootmem(entered)
        except BootFailure as e:
            raise KexecFailure(abi.ENOEXEC, "xen#2 could not boot from this load: %s" % e)
        opts = entered.opts
        if opts.liveupdate_base != hv.lu_start:
            raw = entered.info.cmdline.lstrip(" ")
            dropped = ""
            if raw.startswith("liveupdate=") and raw != entered.cmdline:
                dropped = (" (its liveupdate= is the first word, which Xen drops as the image's "
                           "name from any loader but GRUB 2)")
            where = ("names bootmem at 0x%x" % opts.liveupdate_base
                     if opts.liveupdate_base is not None else "has no liveupdate=SIZE@BASE")
            raise KexecFailure(abi.EINVAL, "xen#2's command line %s, not this host's LU bootmem "
                               "at 0x%x: it would boot afresh instead of restoring%s"
                               % (where, hv.lu_start, dropped))
        home = next((s for s in image.loaded if s.dest <= entered.image_start < s.dest + s.dest_size),
                    None)
        if home is None or entered.image_end > home.dest + home.dest_size:
            raise KexecFailure(abi.EINVAL, "xen#2's image [0x%x, 0x%x) (its IMAGE note) is not "
                               "inside one loaded segment: the rest would land on frames the "
                               "load did not reserve" % (entered.image_start, entered.image_end))
        # Its bss would overwrite a boot information it has not read yet
        # (kexec-tools' EBX may point anywhere; a boot page's lies in its page).
        info = entered.info
        mbi_end = info.mbi_addr + int.from_bytes(hv.kexec.reader(image)(info.mbi_addr, 4), "little")
        if info.mbi_addr < entered.image_end and entered.image_start < mbi_end:
            raise KexecFailure(abi.EINVAL, "xen#2's image [0x%x, 0x%x) overlaps its boot "
                               "information at [0x%x, 0x%x)" % (entered.image_start,
                                                                 entered.image_end,
                                                                 info.mbi_addr, mbi_end))
        return entered

    def _note_kexec_images(self):
        """What becomes of the other loaded images: the crash image's bytes
        lie in the crash region both hypervisors keep, and the stream
        carries it; a reboot image lives in xen#1's heap, which xen#2
        reclaims, as Xen's kimage pages would be: it is not carried."""
        images, info = self.hv.kexec.images, self.report.info
        info["crash_image"] = "to carry" if abi.KEXEC_TYPE_CRASH in images else "none"
        info["reboot_image"] = "not carried" if abi.KEXEC_TYPE_DEFAULT in images else "none"
        if abi.KEXEC_TYPE_DEFAULT in images:
            self.hv.console.log("live update: the loaded reboot image is not carried (it lives in "
                                "xen#1's heap): load it again after the update")

    def _check_bootmem_clean(self):
        hv = self.hv
        lo, n = hv.lu_start // PAGE_SIZE, hv.lu_size // PAGE_SIZE
        # One pass over bootmem's frames; the search that names the owner
        # only when there is something to name.
        uses = hv.frametable.histogram(lo, lo + n)
        if not (uses.get("guest") or uses.get("shared") or uses.get("iommu-pt")):
            return
        for owner_use, what in ((lib.LU_USE_GUEST, "guest page"), (lib.LU_USE_SHARED, "shared page"),
                                (lib.LU_USE_IOMMU_PT, "IOMMU page table")):
            for dom_owner in [d.domid for d in hv.domains.values()] + [abi.DOMID_XEN]:
                if hv.frametable.count(dom_owner, owner_use, lo, lo + n):
                    raise KexecFailure(abi.EINVAL, "a %s of owner %d lies in LU bootmem" % (what, dom_owner))

    # the update itself

    def start(self):
        hv = self.hv
        hv.lu_active = True
        hv.lu_report = self.report
        threading.Thread(target=self._run, name="live-update", daemon=True).start()

    def _count_guest_writes(self, maddr, length):
        n = self.hv.frametable.guest_bytes(maddr, length)
        self.report.info["guest_bytes_written"] = self.report.info.get("guest_bytes_written", 0) + n

    def _run(self):
        hv, rep = self.hv, self.report
        q = pages = None
        rep.info["guest_bytes_written"] = 0
        hv.ram.on_write = self._count_guest_writes
        # No cyclic collection inside the blackout; the exec ends this
        # process, an abort turns it back on.
        gc.disable()
        try:
            with hv.lock:
                image = hv.kexec.images[abi.KEXEC_TYPE_LIVEUPDATE]
                rep.phase("quiesce")
                # Interrupts off: what a device raises from here waits in the
                # chipset, where the next hypervisor will not look.
                hv.iommu.stop_delivery()
                q = Quiesce(hv)
                q.hvm_first(hv.opts.lu_quiesce_timeout_ms / 1000.0, self.fault)
                q.pv_last(self.fault)
                rep.info["first_pause_ns"] = q.first_pause_ns
                rep.phase("save")
                self.fault("save")
                # The stream carries the phases so far; the save's own end
                # goes in the breadcrumb, written after it.
                timings = rep.timings() + [("first-pause", q.first_pause_ns, q.first_pause_ns)]
                data, types = save.build_stream(hv, timings, q.paused_before, rep.id, self.fault)
                rep.end()
                save_end = rep.phases[-1][2]
                rep.info["domain_steps"] = {d.domid: d.steps for d in hv.domains.values()}
                rep.phase("handover")
                self.fault("stream-alloc")
                pages = handover.StreamPages(hv, data)
                pages.build_mfn_array(self.fault)
                pages.write_breadcrumb(save_end, self.fault)
                self.fault("image-check")
                # The SHA-256 held at pre-flight; what is checked here is
                # that not a byte changed since (handover.image_fingerprint).
                if handover.image_fingerprint(hv, image) != self.image_fingerprint:
                    raise KexecFailure(abi.EIO, "the loaded image changed in memory")
                rep.info.update(stream_bytes=len(data), stream_pages=pages.nr,
                                record_types=sorted(ls.record_name(t) for t in types))
                hv.console.log("live update: %d-byte stream in %d pages, MFN array at 0x%x; "
                               "exec into %s", len(data), pages.nr, pages.array_maddr,
                               rep.info.get("to_version"))
                # Point of no return.
                handover.place_image(hv, image)
                hv.console.log("live update: %d bytes of guest frames written by xen#1",
                               rep.info["guest_bytes_written"])
                handover.stamp_exec(hv)
                hv.exec_into(image.entry)
        except (QuiesceTimeout, InjectedFault, KexecFailure, handover.HandoverError) as e:
            self._abort(q, pages, str(e))
        except Exception as e:          # a bug: still, nothing may be lost
            self._abort(q, pages, "internal error: %r" % e)
            raise

    def _abort(self, q, pages, why):
        gc.enable()
        hv = self.hv
        hv.ram.on_write = None
        if pages is not None:
            pages.release()
            handover.clear_breadcrumb(hv)
        if q is not None:
            hv.iommu.start_delivery()
            q.resume()
        self.report.finish("aborted", why)
        hv.history.record(self.report.to_json())
        hv.lu_active = False
        hv.console.log("live update aborted, every domain resumed: %s", why)


def dry_run(hv):
    """`kexec-lu check`: every pre-flight check of a live update, then what
    would keep the quiesce from completing, as it stands now.  Pauses
    nothing, changes nothing; -> the answer as JSON-able data."""
    lu = LiveUpdate(hv)
    try:
        lu.preflight(dry_run=True)
        error = None
    except KexecFailure as e:
        error = str(e)
    waiting = [{"domid": d.domid, "name": d.name, "vcpu": i, "waits_for": why, "blocks": blocks}
               for d, i, why, blocks in Quiesce(hv).waiting()]
    info = lu.report.info
    return {"ready": error is None and not any(w["blocks"] for w in waiting), "error": error,
            "from_version": info["from_version"], "to_version": info.get("to_version"),
            "crash_image": info.get("crash_image"), "reboot_image": info.get("reboot_image"),
            "waiting": waiting}
