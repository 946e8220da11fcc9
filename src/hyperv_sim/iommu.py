"""The hypervisor's IOMMU driver, after Xen's VT-d one (docs/iommu.md): the
root and context tables, the invalidation queue, assigning a device to a
domain's second-level tables; and, for xen#2, taking over an IOMMU that is
running without writing to it.

The structures are Xen frames (use iommu-pt) the stream names in
LU_XEN_REGIONS (kind iommu), so that xen#2 never allocates, scrubs or hands
them out.  The IOMMU is enabled when the first device is assigned.
"""
import struct
import threading
import time

from xen_public import abi
from xen_public.abi import PAGE_SIZE

from . import guest
from ._lu_core import lib as core
from ._lu_hw import lib as hw
from .chipset import parse_bdf

FAULT_REASONS = {
    hw.LU_FAULT_ROOT_NOT_PRESENT: "root entry not present",
    hw.LU_FAULT_CONTEXT_NOT_PRESENT: "context entry not present",
    hw.LU_FAULT_TABLE_BEYOND_RAM: "a table beyond RAM",
    hw.LU_FAULT_TRANSLATION_OFF: "translation disabled",
    hw.LU_FAULT_WRITE_DENIED: "write denied",
    hw.LU_FAULT_READ_DENIED: "read denied",
    hw.LU_FAULT_NOT_PRESENT: "no mapping",
}

ENTRY = struct.Struct("<QQ")            # root, context and invalidation entries
ADDR_MASK = 0x000FFFFFFFFFF000          # bits 12-51: a table's or page's address
QUEUE_FRAMES = 2                        # the descriptors, then the wait status words
WAIT_DONE = 0x600DF00D
# The interrupt-remapping table, then a frame of posted-interrupt
# descriptors (64 of 64 bytes): entry and descriptor i are device slot i's.
IRT_FRAMES = 2
VECTOR_BASE = 0x40                      # device slot i raises vector 0x40 + i
DELIVERY_PERIOD_S = 0.001               # the handler of remapped interrupts


class IommuError(Exception):
    """The IOMMU did not do what its driver asked (a bad descriptor)."""


class Iommu:
    def __init__(self, hv):
        self.hv = hv
        self.chipset = hv.chipset
        self.root_mfn = None
        self.queue_mfn = None
        self.irt_mfn = None
        self.context = {}               # bus -> context table mfn
        self._delivering = None         # the handler thread's stop event

    @property
    def enabled(self):
        return self.root_mfn is not None

    def regions(self):
        """[(first mfn, frames)] of every structure the IOMMU reads."""
        if not self.enabled:
            return []
        return sorted([(self.root_mfn, 1), (self.queue_mfn, QUEUE_FRAMES), (self.irt_mfn, IRT_FRAMES)] +
                      [(mfn, 1) for mfn in self.context.values()])

    def pi_desc_addr(self, slot):
        return (self.irt_mfn + 1) * PAGE_SIZE + slot * hw.LU_PI_DESC_SIZE

    # xen#1 (and any hypervisor that boots): set it up.

    def _frames(self, n):
        (mfn, _), = self.hv.allocator.alloc(n, abi.DOMID_XEN, core.LU_USE_IOMMU_PT, contiguous=True)
        self.hv.ram.zero(mfn * PAGE_SIZE, n * PAGE_SIZE)
        return mfn

    def _enable(self):
        regs = self.chipset.regs
        self.root_mfn = self._frames(1)
        self.queue_mfn = self._frames(QUEUE_FRAMES)
        regs.rtaddr = self.root_mfn * PAGE_SIZE
        self.chipset.command(hw.LU_VTD_SRTP)
        regs.iqa = self.queue_mfn * PAGE_SIZE
        regs.iqh = regs.iqt = 0
        self.chipset.command(hw.LU_VTD_QIE)
        self._invalidate([_iotlb_global()])
        self.irt_mfn = self._frames(IRT_FRAMES)
        regs.irta = self.irt_mfn * PAGE_SIZE
        self.chipset.command(hw.LU_VTD_QIE | hw.LU_VTD_SIRTP)
        self.chipset.command(hw.LU_VTD_QIE | hw.LU_VTD_TE | hw.LU_VTD_IRE)
        self.hv.console.log("IOMMU: root table at 0x%x, invalidation queue at 0x%x, interrupt remapping "
                            "at 0x%x (%s), translation on", self.root_mfn * PAGE_SIZE,
                            self.queue_mfn * PAGE_SIZE, self.irt_mfn * PAGE_SIZE,
                            "posted" if self.hv.opts.iommu_intpost else "not posted")
        self.start_delivery()

    def assign(self, sid, domid, root_mfn):
        """Point the device's context entry at the domain's tables."""
        if not self.enabled:
            self._enable()
        bus, devfn = sid >> 8, sid & 0xFF
        ram = self.hv.ram
        if bus not in self.context:
            self.context[bus] = self._frames(1)
            ram.write(self.root_mfn * PAGE_SIZE + bus * ENTRY.size,
                      ENTRY.pack(self.context[bus] * PAGE_SIZE | hw.LU_VTD_PRESENT, 0))
        ram.write(self.context[bus] * PAGE_SIZE + devfn * ENTRY.size,
                  ENTRY.pack(root_mfn * PAGE_SIZE | hw.LU_VTD_PRESENT, hw.LU_VTD_AW_48 | domid << 8))
        self._invalidate([_context(), _iotlb_domain(domid)])

    def route_interrupt(self, slot, domid):
        """Device slot's MSI to its domain's vCPU 0: posted into the slot's
        descriptor, or remapped for this hypervisor's handler to post."""
        lo = hw.LU_IRTE_PRESENT | (VECTOR_BASE + slot) << 16 | domid << 48
        if self.hv.opts.iommu_intpost:
            lo |= hw.LU_IRTE_POSTED
        self.hv.ram.zero(self.pi_desc_addr(slot), hw.LU_PI_DESC_SIZE)
        self.hv.ram.write(self.irt_mfn * PAGE_SIZE + slot * ENTRY.size, ENTRY.pack(lo, self.pi_desc_addr(slot)))

    def unroute_interrupt(self, slot):
        self.hv.ram.write(self.irt_mfn * PAGE_SIZE + slot * ENTRY.size, ENTRY.pack(0, 0))

    def posted(self, slot):
        return bool(ENTRY.unpack(self.hv.ram.read(self.irt_mfn * PAGE_SIZE + slot * ENTRY.size,
                                                  ENTRY.size))[0] & hw.LU_IRTE_POSTED)

    def pi_desc(self, slot):
        return self.hv.ram.pointer(self.pi_desc_addr(slot), "uint64_t *")

    def inject(self, slot):
        """Post the slot's vector as software (no posted-interrupt hardware)."""
        hw.lu_hw_post(self.pi_desc(slot), VECTOR_BASE + slot)

    def start_delivery(self):
        """The handler of remapped interrupts: what waits for the CPU is
        posted for the guest to take.  Posted ones need no handler.  Whether
        any is remapped is the remapping table's say (xen#2 takes it over as
        xen#1 wrote it), else this hypervisor's option."""
        if self._delivering is not None or not self.enabled:
            return
        slots = self.hv.devices.slots().values()
        if all(self.posted(s) for s in slots) if slots else self.hv.opts.iommu_intpost:
            return
        self._delivering = stop = threading.Event()

        def handler():
            while not stop.wait(DELIVERY_PERIOD_S):
                for slot in self.hv.devices.slots().values():
                    if hw.lu_hw_take_irr(self.chipset.c, slot):
                        self.inject(slot)
        threading.Thread(target=handler, name="interrupts", daemon=True).start()

    def stop_delivery(self):
        """Interrupts off (a live update's blackout begins): what arrives now
        waits in the chipset, and a kexec'd hypervisor never sees it."""
        if self._delivering is not None:
            self._delivering.set()
            self._delivering = None

    def unassign(self, sid, domid):
        """The device loses its mappings (its domain is going away)."""
        bus, devfn = sid >> 8, sid & 0xFF
        if bus not in self.context:
            return
        self.hv.ram.write(self.context[bus] * PAGE_SIZE + devfn * ENTRY.size, ENTRY.pack(0, 0))
        self._invalidate([_context(), _iotlb_domain(domid)])

    def _invalidate(self, descriptors):
        """Queue the descriptors and a wait; the IOMMU consumes them."""
        regs, ram = self.chipset.regs, self.hv.ram
        status = (self.queue_mfn + 1) * PAGE_SIZE
        ram.write(status, struct.pack("<I", 0))
        for lo, hi in descriptors + [(hw.LU_INV_WAIT | WAIT_DONE << 32, status)]:
            ram.write(self.queue_mfn * PAGE_SIZE + regs.iqt * ENTRY.size, ENTRY.pack(lo, hi))
            regs.iqt = (regs.iqt + 1) % hw.LU_IQ_ENTRIES
        # The hardware's work, done as the driver waits for it.
        if hw.lu_hw_drain_queue(self.chipset.c, ram.base, ram.nr_frames) < 0 or \
                struct.unpack("<I", ram.read(status, 4))[0] != WAIT_DONE:
            raise IommuError("the IOMMU refused an invalidation descriptor (fault status 0x%x)"
                             % regs.fsts)

    # xen#2: take it over as it is.

    @classmethod
    def take_over(cls, hv, regions):
        """An Iommu for the structures xen#1 left (checked first by
        check_hardware); reads the chipset and the tables, writes nothing."""
        iommu = cls(hv)
        regs = hv.chipset.regs
        if not regions:
            return iommu
        iommu.root_mfn = regs.rtaddr_active // PAGE_SIZE
        iommu.queue_mfn = (regs.iqa & ~(PAGE_SIZE - 1)) // PAGE_SIZE
        iommu.irt_mfn = (regs.irta_active & ADDR_MASK) // PAGE_SIZE
        root = hv.ram.read(iommu.root_mfn * PAGE_SIZE, PAGE_SIZE)
        for bus, (lo, _) in enumerate(ENTRY.iter_unpack(root)):
            if lo & hw.LU_VTD_PRESENT:
                iommu.context[bus] = (lo & ADDR_MASK) // PAGE_SIZE
        return iommu


def check_hardware(chipset, ram, regions, devices):
    """What xen#2 checks of the IOMMU before it changes anything: the
    chipset's root table, queue and every context table lie in the frames
    the stream names as the IOMMU's (regions: [(first, count)]), and each
    assigned device (devices: [(bdf, domid, root mfn)]) is translated
    through its domain's tables.  -> a problem, or None."""
    regs = chipset.regs
    frames = set()
    for first, n in regions:
        frames.update(range(first, first + n))
    on = bool(regs.gsts & hw.LU_VTD_TE)
    if not regions:
        return "the IOMMU is on, but the stream names none of its tables" if on else None
    if not on:
        return "the stream names IOMMU tables, but the IOMMU is off"
    root = regs.rtaddr_active // PAGE_SIZE
    if root not in frames:
        return "the IOMMU's root table at 0x%x is not among the stream's IOMMU frames" % (root * PAGE_SIZE)
    queue = regs.iqa // PAGE_SIZE
    if queue not in frames or queue + 1 not in frames:
        return "the IOMMU's invalidation queue at 0x%x is not among the stream's IOMMU frames" % (queue * PAGE_SIZE)
    irt = (regs.irta_active & ADDR_MASK) // PAGE_SIZE
    if not regs.gsts & hw.LU_VTD_IRE or irt not in frames or irt + 1 not in frames:
        return "the IOMMU's interrupt-remapping table at 0x%x is not among the stream's IOMMU frames" % (
            irt * PAGE_SIZE)
    for bus, (lo, _) in enumerate(ENTRY.iter_unpack(ram.read(root * PAGE_SIZE, PAGE_SIZE))):
        if lo & hw.LU_VTD_PRESENT:
            ct = (lo & ADDR_MASK) // PAGE_SIZE
            if ct not in frames:
                return "bus %02x's context table at 0x%x is not among the stream's IOMMU frames" % (
                    bus, ct * PAGE_SIZE)
    for bdf, domid, root_mfn in devices:
        got = context_entry(ram, root, parse_bdf(bdf))
        if got != (root_mfn, domid):
            return ("device %s of d%d: the IOMMU translates it %s, the stream says through d%d's "
                    "tables at 0x%x" % (bdf, domid, "through nothing" if got is None else
                                        "through d%d's tables at 0x%x" % (got[1], got[0] * PAGE_SIZE),
                                        domid, root_mfn * PAGE_SIZE))
    return None


def context_entry(ram, root_mfn, sid):
    """(second-level root mfn, domain id) the device's context entry
    names, or None if its root or context entry is not present."""
    lo, _ = ENTRY.unpack(ram.read(root_mfn * PAGE_SIZE + (sid >> 8) * ENTRY.size, ENTRY.size))
    if not lo & hw.LU_VTD_PRESENT:
        return None
    lo, hi = ENTRY.unpack(ram.read((lo & ADDR_MASK) + (sid & 0xFF) * ENTRY.size, ENTRY.size))
    if not lo & hw.LU_VTD_PRESENT:
        return None
    return (lo & ADDR_MASK) // PAGE_SIZE, (hi >> 8) & 0xFFFF


# How long a forbidden act leaves the IOMMU wrong: many DMA periods.
FORBIDDEN_WINDOW_S = 0.02


def forbidden_act(hv, act):
    """Do to the running IOMMU what the seed forbids xen#2 (lu_fault= names
    the act, faultpoints.FORBIDDEN_ACTS), to the first assigned device's
    domain, so that `verify` shows it is caught."""
    if not hv.pci_assigned or act in ("iommu-scrub-pi", "iommu-drop-resume-interrupt"):
        return                  # those two are done (or not) as the guests resume
    bdf = sorted(hv.pci_assigned)[0]
    dom = hv.domains[hv.pci_assigned[bdf]]
    iommu, regs, ram = hv.iommu, hv.chipset.regs, hv.ram
    hv.console.log("forbidden act %s on device %s of d%d", act, bdf, dom.domid)
    if act == "iommu-zero-table":
        iova = hv.devices.regs(bdf).dma_iova
        ram.zero(_table_frame(ram, dom.iommu_root, iova) * PAGE_SIZE, PAGE_SIZE)
        iommu._invalidate([_iotlb_domain(dom.domid)])
    elif act == "iommu-rewrite-root":
        # As a re-setup does it: latch another root table, and invalidate
        # everything as VT-d requires after a root-pointer change.
        for root in (0, iommu.root_mfn):
            regs.rtaddr = root * PAGE_SIZE
            hv.chipset.command(hw.LU_VTD_SRTP | hw.LU_VTD_QIE | hw.LU_VTD_TE | hw.LU_VTD_IRE)
            iommu._invalidate([_iotlb_global()])
            if not root:
                time.sleep(FORBIDDEN_WINDOW_S)
    elif act == "iommu-flush-rebuild":
        frames = [m + i for m, n in sorted(dom.iommu_frames) for i in range(n)]
        for mfn in frames:
            ram.zero(mfn * PAGE_SIZE, PAGE_SIZE)
        iommu._invalidate([_iotlb_global()])
        time.sleep(FORBIDDEN_WINDOW_S)
        dom.iommu_root = guest.build_tables(ram, frames, guest.table_counts(dom.nr_frames), guest.P2M(dom.p2m))
        iommu._invalidate([_iotlb_global()])


def _table_frame(ram, root_mfn, iova):
    """The last-level table frame that maps iova."""
    table = root_mfn * PAGE_SIZE
    for level in (4, 3, 2):
        e, = struct.unpack("<Q", ram.read(table + ((iova >> (12 + 9 * (level - 1))) & 511) * 8, 8))
        table = e & ADDR_MASK
    return table // PAGE_SIZE


def _context():
    return (hw.LU_INV_CONTEXT, 0)


def _iotlb_domain(domid):
    return (hw.LU_INV_IOTLB | hw.LU_INV_DOMAIN << 4 | domid << 16, 0)


def _iotlb_global():
    return (hw.LU_INV_IOTLB | hw.LU_INV_GLOBAL << 4, 0)
