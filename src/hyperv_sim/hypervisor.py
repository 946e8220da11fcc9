"""The simulated hypervisor: what it finds at boot and the state it keeps.

It starts the way Xen does after a multiboot2 loader jumps to it: from an
entry address in RAM.  Everything else (its command line, where its image
was put, which version it is) it reads from RAM: the boot-information page
at the entry and the personality notes of the image it points to.
"""
import os
import threading

from xen_public.abi import DOMID_INVALID, DOMID_XEN, E820_RAM, E820_RESERVED, KEXEC_TYPE_NAMES, PAGE_SIZE
from xen_public.lustream import record_name
from xen_public.units import MiB, GiB, align_down, count, format_size

from .chipset import Chipset, ChipsetError, parse_bdf, path_beside as chipset_path
from .console import POWERED_ON
from .history import NoHistory
from .entry import enter
from .errors import BootFailure, DomainError
from ._lu_core import lib
from .builder import BuildError, Builder, backend_slot_addr
from .domain import DOMAIN_TYPES, MAX_VCPUS
from .evtchn import EvtchnError
from .frametable import FrameAllocator, FrameTable, OutOfMemory, RefError
from .grant import GrantError
from .devices import DeviceError, Devices
from .iommu import Iommu
from .guest import BACKEND_SLOT, BACKEND_STATE_PAGES
from .m2p import M2P
from .mappings import Mappings
from .ram import RamError
from .sched import Scheduler, pause_vcpus, unpause_vcpus
from .kexec import Kexec

LOW_RESERVED = 1 * MiB          # firmware, real-mode area: never allocated
LEGACY_HOLE = (0xA0000, 1 * MiB)  # a PC's VGA and BIOS area, reserved in its E820
CRASH_ALIGN = 16 * MiB
FRAMETABLE_ALIGN = 2 * MiB
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.:-")


def valid_domain_name(name):
    """Letters, digits and _.:-, starting with a letter or digit, at most 64
    (checked by hand: `re` is not worth its import in every start)."""
    return (bool(name) and len(name) <= 64 and name[0] in _NAME_FIRST and set(name) <= _NAME_REST
            and not name.isdigit())     # xl reads an all-digit name as a domain id


class Hypervisor:
    CRASH_NOTE_SIZE = 512

    def __init__(self, ram, entry, console, nr_pcpus=None, exec_into=None, started_ns=None,
                 history=None, devices_powered=False):
        self.ram = ram
        self.started_ns = started_ns        # CLOCK_MONOTONIC: when this program began
        self.console = console
        self.history = history or NoHistory()   # history.History; none for a hypervisor in a test
        self.lock = threading.RLock()
        self.domains = {}
        self._next_domid = 1
        self.kexec = Kexec(self)
        # How to jump into a new hypervisor (xen.py: execve); None in tests
        # that run a hypervisor inside their own process.
        self.exec_into = exec_into
        self.lu_active = False
        self.lu_report = None
        self.lu_fault = None
        self.incarnation = int.from_bytes(os.urandom(8), "little")
        self.entry = entry                  # the boot information's address
        self.devices_powered = devices_powered  # False for a hypervisor inside a test's process
        self._boot(entry, nr_pcpus)

    # boot

    def _boot(self, entry, nr_pcpus):
        ram = self.ram
        entered = enter(ram.read, entry, ram.size)
        self.entered = entered              # what the loader left: xen#2 clears its hand-off
        self.personality = p = entered.personality
        self.opts = entered.opts
        ram.sparse = self.opts.ram_sparse
        self.cmdline = entered.cmdline
        self.xen_start = entered.image_start
        self.xen_size = p.image_size
        self.nr_pcpus = self.opts.nr_cpus or nr_pcpus or os.cpu_count() or 1
        if self.opts.liveupdate_base is None:
            self.console.log(POWERED_ON)
        self.console.log("---- hypervisor incarnation %016x ----", self.incarnation)
        self.console.log("Xen version %s (hyperv-sim), %d MiB RAM, %d CPUs",
                         p.version, ram.size >> 20, self.nr_pcpus)
        self.console.log("Command line: %s", entered.cmdline)
        for word in self.opts.unknown:
            self.console.log("parameter \"%s\" unknown!", word)
        self.pci_assigned = {}
        try:
            self.chipset = Chipset.open(chipset_path(ram.path))
        except ChipsetError as e:
            raise BootFailure("no IOMMU: %s" % e)
        self.iommu = Iommu(self)            # xen#2: taken over from the stream's frames
        # Passthrough devices run in processes of their own; xen#2 finds them here.
        self.devices = Devices(self.chipset, os.path.dirname(os.path.abspath(ram.path)), self.devices_powered)
        self.backend_slots = [None] * (BACKEND_STATE_PAGES * (PAGE_SIZE // BACKEND_SLOT.size))
        self.sched = Scheduler(self.nr_pcpus)
        if self.opts.liveupdate_base is not None:
            from .liveupdate.xen2 import boot_from_stream
            boot_from_stream(self)          # booted by a live update: everything from the stream
            return
        self._lay_out_memory()
        self.mappings = Mappings(self.frametable)
        try:
            dom0 = self.create_domain("Domain-0", "pv", self.opts.dom0_mem,
                                      self.opts.dom0_max_vcpus, control=True)
        except DomainError as e:
            raise BootFailure("cannot build dom0 (dom0_mem=%s): %s"
                              % (format_size(self.opts.dom0_mem), e))
        self.console.log("Dom0: %s, %d vCPUs", format_size(dom0.memory_bytes), dom0.vcpus)
        self.sched.start()

    def allocate_xen_data_pages(self):
        """Per-CPU crash notes and vmcoreinfo: hypervisor data dump tools read."""
        notes_frames = _frames(self.nr_pcpus * self.CRASH_NOTE_SIZE)
        (mfn, _), = self._alloc_xen(notes_frames, "crash notes")
        self.crash_notes_base = mfn * PAGE_SIZE
        (mfn, _), = self._alloc_xen(1, "vmcoreinfo")
        text = ("VMCOREINFO_XEN\nOSRELEASE=%s\nPAGESIZE=%d\n" % (self.personality.version, PAGE_SIZE)).encode()
        self.ram.write(mfn * PAGE_SIZE, text)
        self.vmcoreinfo = (mfn * PAGE_SIZE, len(text))

    def _lay_out_memory(self):
        ram, opts = self.ram, self.opts
        nr = ram.nr_frames
        xen_end = self.xen_start + self.xen_size
        if self.xen_start % PAGE_SIZE or xen_end > ram.size:
            raise BootFailure("hypervisor image [0x%x, 0x%x) is not inside RAM"
                              % (self.xen_start, xen_end))
        self.lu_size = opts.liveupdate_size
        self.lu_start = self.xen_start - self.lu_size if self.lu_size else 0
        if self.lu_size and self.lu_start < LOW_RESERVED:
            raise BootFailure("liveupdate=%s does not fit below Xen at 0x%x"
                              % (format_size(self.lu_size), self.xen_start))
        # Claimed below Xen: the first 1 MiB, LU bootmem, the image itself.
        low_used = self.lu_start if self.lu_size else self.xen_start
        ft_bytes = FrameTable.bytes_for(nr)
        ft_start = align_down(ram.size - ft_bytes, FRAMETABLE_ALIGN)
        if ft_start < xen_end:
            ft_start = align_down(low_used - ft_bytes, FRAMETABLE_ALIGN)
            if ft_start < LOW_RESERVED:
                raise BootFailure("%d MiB of RAM leaves no room for the frame table" % (ram.size >> 20))
        try:
            # Xen's own regions are written from now on: disk behind them first.
            ram.reserve(ft_start, ft_bytes)
            if self.lu_size:
                ram.reserve(self.lu_start, self.lu_size)
        except RamError as e:
            raise BootFailure(str(e))
        self.frametable = ft = FrameTable(ram, ft_start, nr)
        ft.mark(0, nr, DOMID_INVALID, lib.LU_USE_FREE)
        ft.mark(0, LOW_RESERVED // PAGE_SIZE, DOMID_XEN, lib.LU_USE_RESERVED)
        ft.mark(self.xen_start // PAGE_SIZE, _frames(xen_end) - self.xen_start // PAGE_SIZE,
                DOMID_XEN, lib.LU_USE_XEN_IMAGE)
        if self.lu_size:
            ft.mark(self.lu_start // PAGE_SIZE, self.lu_size // PAGE_SIZE, DOMID_XEN,
                    lib.LU_USE_LU_BOOTMEM)
        ft.mark(ft_start // PAGE_SIZE, ft_bytes // PAGE_SIZE, DOMID_XEN, lib.LU_USE_XENHEAP)
        self.allocator = FrameAllocator(ft)
        self.console.log("Frame table: %s at 0x%x", format_size(ft_bytes), ft_start)
        if self.lu_size:
            self.console.log("Live update bootmem: %s at 0x%x, Xen at 0x%x-0x%x",
                             format_size(self.lu_size), self.lu_start, self.xen_start, xen_end)
        m2p_bytes = M2P.bytes_for(nr)
        (mfn, _), = self._alloc_xen(m2p_bytes // PAGE_SIZE, "the M2P table", lib.LU_USE_M2P)
        self.m2p = M2P(ram, mfn * PAGE_SIZE, nr)
        self._reserve_crash_region()
        self.allocate_xen_data_pages()

    def _alloc_xen(self, frames, what, use=lib.LU_USE_XENHEAP):
        try:
            got = self.allocator.alloc(frames, DOMID_XEN, use, contiguous=True)
            if self.opts.liveupdate_base is not None:
                # After a live update free frames may hold xen#1's data;
                # zeroed, not punched: they stay backed on disk.
                (mfn, n), = got
                self.ram.zero(mfn * PAGE_SIZE, n * PAGE_SIZE)
            return got
        except OutOfMemory as e:
            raise BootFailure("no memory for %s: %s" % (what, e))

    def _reserve_crash_region(self):
        size, base = self.opts.crash_size, self.opts.crash_base
        self.crash_region = (0, 0)
        if not size:
            return
        if size % PAGE_SIZE or (base is not None and base % PAGE_SIZE):
            raise BootFailure("crashkernel=%s: size and base must be page-aligned" % format_size(size))
        try:
            if base is not None:
                self.allocator.claim(base // PAGE_SIZE, size // PAGE_SIZE, DOMID_XEN, lib.LU_USE_CRASH)
            else:
                (mfn, _), = self.allocator.alloc(size // PAGE_SIZE, DOMID_XEN, lib.LU_USE_CRASH,
                                                 limit=4 * GiB // PAGE_SIZE, contiguous=True,
                                                 align=CRASH_ALIGN // PAGE_SIZE)
                base = mfn * PAGE_SIZE
        except OutOfMemory as e:
            raise BootFailure("crashkernel=%s: %s" % (format_size(size), e))
        self.crash_region = (base, size)
        self.console.log("Kdump: %s reserved at 0x%x", format_size(size), base)

    # domains

    def create_domain(self, name, dtype, memory, vcpus, control=False, evtchn_abi="2-level",
                      grant_version=1, pci=(), workload="busy", workload_pages=16, seed=None,
                      workload_rate=None):
        with self.lock:
            if not valid_domain_name(name):
                raise DomainError("invalid domain name %r: use letters, digits and _.:- "
                                  "(at most 64, not all digits)" % name)
            if any(d.name == name for d in self.domains.values()):
                raise DomainError("a domain named %r already exists" % name)
            if dtype not in DOMAIN_TYPES:
                raise DomainError("invalid domain type %r: one of %s" % (dtype, ", ".join(DOMAIN_TYPES)))
            if not 1 <= vcpus <= MAX_VCPUS:
                raise DomainError("invalid vCPU count %d: 1 to %d" % (vcpus, MAX_VCPUS))
            if memory <= 0 or memory % PAGE_SIZE:
                raise DomainError("invalid memory size %d: a positive multiple of 4 KiB" % memory)
            if evtchn_abi not in ("2-level", "fifo"):
                raise DomainError("invalid event channel ABI %r: 2-level or fifo" % evtchn_abi)
            if grant_version not in (1, 2):
                raise DomainError("invalid grant table version %r: 1 or 2" % grant_version)
            if workload not in ("busy", "idle"):
                raise DomainError("invalid workload %r: busy or idle" % workload)
            domid = 0 if control else self._next_domid
            builder = Builder(self)
            with self.sched.stopped():
                try:
                    dom = builder.build(domid, name, dtype, memory, vcpus, control=control,
                                        evtchn_abi=evtchn_abi, grant_version=grant_version,
                                        pci=tuple(pci), workload=workload,
                                        workload_pages=workload_pages, seed=seed,
                                        workload_rate=workload_rate)
                except Exception as e:      # whatever failed, nothing stays half-built
                    self._forget_partial(domid)
                    builder.undo()
                    why = e if isinstance(e, (BuildError, GrantError, EvtchnError, RefError, DeviceError)) else \
                        "internal error: %s: %s" % (type(e).__name__, e)
                    raise DomainError("cannot create %s with %s: %s" % (name, format_size(memory), why))
                if not control:
                    self._next_domid += 1
                self.domains[domid] = dom
                self._reschedule()
            self.console.log("d%d: created %s %s, %s, %s, %s event channels, grant v%d%s",
                             domid, dtype.upper(), name, format_size(memory), count(vcpus, "vCPU"), evtchn_abi,
                             grant_version, ", pci " + " ".join(pci) if pci else "")
            return dom

    def _forget_partial(self, domid):
        """A failed build: drop whatever it registered outside the domain."""
        m = self.mappings
        for gm in [g for g in m.grant_maps if g.granter == domid]:
            m.grant_maps.remove(gm)
            self.frametable.put_ref(gm.mfn, lib.LU_PGT_WRITABLE if gm.writable else None)
        for fm in [f for f in m.foreign_maps if f.domid == domid]:
            m.foreign_maps.remove(fm)
            self.frametable.put_ref(fm.mfn, lib.LU_PGT_WRITABLE)
        m.release_xen_maps(domid)
        for slot, owner in enumerate(self.backend_slots):
            if owner == domid:
                # dom0's backend forgets the frontend (its state lives in dom0).
                self.ram.zero(backend_slot_addr(self, slot), BACKEND_SLOT.size)
                self.backend_slots[slot] = None
        for bdf in [b for b, d in self.pci_assigned.items() if d == domid]:
            slot = self.devices.slots().get(bdf)
            self.devices.stop(bdf)                          # no more DMA or interrupts, then
            if slot is not None:
                self.iommu.unroute_interrupt(slot)
            self.iommu.unassign(parse_bdf(bdf), domid)      # no more mappings, before its tables are freed
            del self.pci_assigned[bdf]
        dom0 = self.domains.get(0)
        if dom0 and domid != 0:
            for port in [p for p, v in dom0.evtchn.ports.items() if v.remote_domid == domid]:
                del dom0.evtchn.ports[port]

    def adopt_restored_domains(self):
        """After a live update's restore: new domids continue after the
        restored ones, and the scheduler gets their vCPUs (still paused)."""
        self._next_domid = max(self.domains) + 1
        with self.sched.stopped():
            self._reschedule()

    def _reschedule(self):
        """Hand the scheduler every live vCPU and the dom0 software serving
        them.  Called with the scheduler stopped."""
        builder = Builder(self)
        vcpus, dm, backends = [], [], []
        maps = {}
        for m in self.mappings.grant_maps:
            maps.setdefault((m.granter, m.ref), m)      # the first, as a search finds
        for dom in self.domains.values():
            if dom.dying:
                continue
            vcpus += dom.vcpu_list()
            if dom.ioreq:
                dm += builder.dm_clients(dom)
            if dom.frontend:
                backends.append(builder.backend(dom, maps))
        self.sched.set_work(vcpus, dm, backends)

    def find_domain(self, ident):
        """A domain by domid (int or digits: never a name, as in xl) or name."""
        with self.lock:
            text = str(ident)
            if text.isdigit():
                if int(text) in self.domains:
                    return self.domains[int(text)]
                raise DomainError("no such domain: %s" % ident)
            for dom in self.domains.values():
                if dom.name == text:
                    return dom
            raise DomainError("no such domain: %s" % ident)

    def destroy_domain(self, ident, detach=True):
        """Xen's destroydomain.  With detach, dom0's backends and device
        model first let go of the domain (what xl destroy does); without, a
        domain dom0 still maps stays, dying, until `detach_domain`."""
        with self.lock:
            dom = self.find_domain(ident)
            if dom.control:
                raise DomainError("%s is the control domain and cannot be destroyed" % dom.name)
            with self.sched.stopped():
                if not dom.dying:
                    dom.dying = True
                    for v in dom.vcpu_list():
                        v.pause_req = 1          # it runs nothing any more
                    self.mappings.release_xen_maps(dom.domid)
                    self.console.log("d%d: %s is dying", dom.domid, dom.name)
                if detach:
                    self.mappings.release_held_on(dom)
                self._reschedule()
                self._reap(dom)

    def detach_domain(self, ident):
        """dom0's backends and device models release their mappings of a
        dying domain (its frontend went away); it then goes."""
        with self.lock:
            dom = self.find_domain(ident)
            if not dom.dying:
                raise DomainError("%s is not dying: dom0 lets go of a domain when it is "
                                  "destroyed (hyperv-sim destroy)" % dom.name)
            with self.sched.stopped():
                self.mappings.release_held_on(dom)
                self._reap(dom)

    def _reap(self, dom):
        """Free a dying domain once nobody maps its pages any more."""
        if not dom.dying or self.mappings.held_on(dom.domid):
            return False
        self._forget_partial(dom.domid)
        for gfn, mfn, n in dom.p2m:
            self.m2p.invalidate(mfn, n)
        frames = dom.machine_extents() + dom.shared_frames + dom.iommu_frames
        for mfn, n in frames:
            self.ram.scrub(mfn * PAGE_SIZE, n * PAGE_SIZE)
        self.allocator.release(frames)
        del self.domains[dom.domid]
        self.console.log("d%d: destroyed %s, %s freed", dom.domid, dom.name,
                         format_size(dom.memory_bytes))
        return True

    def set_paused(self, ident, paused):
        with self.lock:
            dom = self.find_domain(ident)
            if dom.dying:
                raise DomainError("%s is dying" % dom.name)
            if paused:
                pause_vcpus(dom.vcpu_list())
            else:
                unpause_vcpus(dom.vcpu_list())
            dom.paused = paused
            self.console.log("d%d: %s", dom.domid, "paused" if paused else "unpaused")
            return dom

    def verify(self):
        from .verify import verify_host
        with self.lock:
            return verify_host(self)

    def close(self):
        """Stop every vCPU, then let go of RAM and the chipset (power off)."""
        self.sched.shutdown()
        self.chipset.close()
        self.ram.close()

    # reports

    def e820(self):
        """The machine memory map [(addr, size, type)] that dom0 asks for: the
        firmware's, a PC's (RAM, the legacy VGA and BIOS hole, RAM).  Xen
        reserves its own image, LU bootmem and the crash region only in its
        boot-time copy (boot_e820 in xen/arch/x86/setup.c), so here they are
        RAM, and kexec-tools places images in them."""
        lo, hi = LEGACY_HOLE
        return [(0, lo, E820_RAM), (lo, hi - lo, E820_RESERVED),
                (hi, self.ram.size - hi, E820_RAM)]

    def info(self):
        with self.lock:
            p = self.personality
            return {
                "xen_version": p.version,
                "xen_major": p.major,
                "xen_minor": p.minor,
                "xen_extra": p.extra,
                "live_update_stream_versions": list(p.lu_versions) if p.lu_versions else None,
                "live_update_records": [record_name(t) for t in sorted(p.lu_records)],
                "cmdline": self.cmdline,
                "nr_cpus": self.nr_pcpus,
                "total_memory": self.ram.size,
                "free_memory": self.allocator.free_frames * PAGE_SIZE,
                "xen": {"start": self.xen_start, "size": self.xen_size},
                "lu_bootmem": {"start": self.lu_start, "size": self.lu_size},
                "crash": {"start": self.crash_region[0], "size": self.crash_region[1]},
                "frametable": {"start": self.frametable.base_maddr,
                               "size": FrameTable.bytes_for(self.frametable.nr_frames)},
                "frames": self.frametable.histogram(),
                "ram_disk_usage": self.ram.disk_usage(),
                "domains": len(self.domains),
                "kexec": {name: (self.kexec.images[t].describe() if t in self.kexec.images else None)
                          for t, name in KEXEC_TYPE_NAMES.items()},
                "devices": self.devices.describe(self.pci_assigned),
                "pid": os.getpid(),
                "incarnation": self.incarnation,
                "live_update": self.lu_report.to_json() if self.lu_report else None,
            }

    def list_domains(self):
        with self.lock:
            return [d.describe() for _, d in sorted(self.domains.items())]


def _frames(nbytes):
    return (nbytes + PAGE_SIZE - 1) // PAGE_SIZE

