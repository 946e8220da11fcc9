"""What a guest's memory looks like when the domain builder is done.

The layout is the guest's own (its kernel's choice): a guest-info page at
gfn 0 where the guest keeps its workload's state, PV page tables mapping all
of its memory, GDT pages, the FIFO event array, a shared ring and data pages
it grants to dom0's backend, HVM special pages (ioreq, buffered ioreq,
xenstore, console) at the top, and one working set per vCPU.
"""
import bisect
import struct

from xen_public.abi import PAGE_SIZE

from ._lu_core import ffi, lib

GUEST_MAGIC = int.from_bytes(b"LUGUEST\0", "little")   # marks a guest info page
PTE_PRESENT, PTE_RW = lib.LU_PTE_PRESENT, lib.LU_PTE_RW
ENTRIES = lib.LU_PTE_ENTRIES
BACKEND_STATE_PAGES = 8               # dom0: 128 backends a page, 1024 in all
BACKEND_SLOT = struct.Struct("<QIIII8x")    # req_cons, front domid, ring ref, be port, fe port: 32 bytes
DATA_GRANTS = 2                       # extra pages a frontend grants dom0 (one RW, one RO)
IO_EVERY = 1 << 16                    # HVM: a device-model read every 64 Ki steps
RING_EVERY = 1 << 15                  # PV frontends: a backend request every 32 Ki steps


INFO_GFN = 0
# Steps a second per vCPU unless the boot line (workload_rate=) or the
# domain says otherwise: enough to see every guest move, little enough that
# an idle host costs next to no CPU.  0 ("max"): as fast as a pCPU runs it.
DEFAULT_WORKLOAD_RATE = 100000
MAX_WORKLOAD_RATE = 4000000000          # the info page holds it in a u32
RATE_UNITS = {"": 1, "k": 1000, "M": 1000000, "G": 1000000000}
RATE_FORMS = "steps a second from 1 to 4G (e.g. 100k, 2M), or max"


def parse_workload_rate(text):
    """"max" (or 0) -> 0, or steps a second: a whole number with an
    optional k, M or G (powers of 1000).  ValueError says what is accepted."""
    text = str(text).strip()
    if text in ("max", "0"):
        return 0
    number, unit = (text[:-1], text[-1]) if text[-1:] in RATE_UNITS and text[-1:] else (text, "")
    if not number.isdigit() or not 1 <= int(number) * RATE_UNITS[unit] <= MAX_WORKLOAD_RATE:
        raise ValueError("workload rate %r: %s" % (text, RATE_FORMS))
    return int(number) * RATE_UNITS[unit]


class LayoutError(Exception):
    pass


def table_counts(nr_pages):
    """Page tables needed to map nr_pages 4 KiB pages: [L4, L3, L2, L1]."""
    l1 = -(-nr_pages // ENTRIES)
    l2 = -(-l1 // ENTRIES)
    l3 = -(-l2 // ENTRIES)
    return [1, l3, l2, l1]


class Layout:
    def __init__(self, nr_pages):
        self.nr_pages = nr_pages
        self.info_gfn = INFO_GFN
        self.pt_gfns = []           # L4 first, then L3s, L2s, L1s
        self.pt_levels = []         # [1, n3, n2, n1]
        self.gdt_gfns = []
        self.evtchn_array_gfn = None
        self.evtchn_ctrl_gfn = None
        self.ring_gfn = None
        self.data_gfns = []
        self.backend_gfns = []
        self.ioreq_gfn = None
        self.bufioreq_gfn = None
        self.store_gfn = None
        self.console_gfn = None
        self.ws_base_gfn = None
        self.ws_pages = 0
        self.dma_gfn = None

    def read_only_gfns(self):
        """Frames a PV guest may not map writable: its tables and GDTs."""
        return set(self.pt_gfns) | set(self.gdt_gfns)

    def to_json(self):
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


def plan(dtype, nr_pages, vcpus, evtchn_abi, is_dom0, frontend, ws_pages, devices=0):
    lay = Layout(nr_pages=nr_pages)
    nxt = 1

    def take(n=1):
        nonlocal nxt
        first = nxt
        nxt += n
        return list(range(first, first + n))

    if dtype == "pv":
        lay.pt_levels = table_counts(nr_pages)
        lay.pt_gfns = take(sum(lay.pt_levels))
        lay.gdt_gfns = take(vcpus)
    if evtchn_abi == "fifo":
        lay.evtchn_array_gfn, lay.evtchn_ctrl_gfn = take(2)
    if frontend:
        lay.ring_gfn, = take()
        lay.data_gfns = take(DATA_GRANTS)
    if is_dom0:
        lay.backend_gfns = take(BACKEND_STATE_PAGES)
    if devices:
        # The pages the guest gives its passthrough NICs: LU_NIC_PAGES each.
        lay.dma_gfn = take(devices * lib.LU_NIC_PAGES)[0]
    lay.ws_base_gfn = nxt
    lay.ws_pages = ws_pages
    take(ws_pages * vcpus)
    # The special pages at the top, as the toolstack places them for a guest
    # of the HVM container: xenstore and console, and HVM's ioreq pages.
    if dtype == "hvm":
        lay.ioreq_gfn, lay.bufioreq_gfn, lay.store_gfn, lay.console_gfn = range(nr_pages - 4, nr_pages)
        top = nr_pages - 4
    elif dtype == "pvh" and not is_dom0:
        lay.store_gfn, lay.console_gfn = nr_pages - 2, nr_pages - 1
        top = nr_pages - 2
    else:
        top = nr_pages
    if nxt > top:
        raise LayoutError("%d pages are too few: the layout needs %d" % (nr_pages, nxt + nr_pages - top))
    return lay


class P2M:
    """gfn -> mfn over the domain's extents."""

    def __init__(self, extents):
        self.extents = sorted(extents)      # [(gfn, mfn, count)]
        self._gfns = [g for g, _, _ in self.extents]

    def mfn(self, gfn):
        i = bisect.bisect_right(self._gfns, gfn) - 1
        if i >= 0:
            g, m, n = self.extents[i]
            if gfn < g + n:
                return m + (gfn - g)
        raise KeyError("gfn 0x%x is not populated" % gfn)

    def mfns(self, gfn, count):
        """A C array of the mfns of gfns [gfn, gfn + count), filled by runs
        (a working set lies in one or two extents); at least one entry."""
        out = ffi.new("uint64_t[]", max(count, 1))
        done = 0
        while done < count:
            g0 = gfn + done
            i = bisect.bisect_right(self._gfns, g0) - 1
            g, m, n = self.extents[i] if i >= 0 else (0, 0, 0)
            if i < 0 or g0 >= g + n:
                raise KeyError("gfn 0x%x is not populated" % g0)
            run = min(count - done, g + n - g0)
            lib.lu_fill_run(out + done, m + (g0 - g), run)
            done += run
        return out

    def array(self, nr_pages):
        """A C array of every gfn's mfn."""
        out = ffi.new("uint64_t[]", nr_pages)
        for g, m, n in self.extents:
            lib.lu_fill_run(out + g, m, n)
        return out


def build_tables(ram, table_mfns, levels, p2m, read_only=(), leaf_flags=PTE_PRESENT | PTE_RW):
    """Write a 4-level table mapping every gfn of p2m at its own address.

    table_mfns: frames for the tables, L4 first then L3s, L2s, L1s (the
    counts in `levels`).  Leaves for `read_only` gfns lose the RW bit.
    Returns the root's mfn.
    """
    n4, n3, n2, n1 = levels
    l4, l3s = table_mfns[0], table_mfns[1:1 + n3]
    l2s = table_mfns[1 + n3:1 + n3 + n2]
    l1s = table_mfns[1 + n3 + n2:]
    assert n4 == 1 and len(l1s) == n1

    def fill_links(parent_mfns, child_mfns):
        for i, child in enumerate(child_mfns):
            parent = parent_mfns[i // ENTRIES]
            entry = ram.pointer(parent * PAGE_SIZE + (i % ENTRIES) * 8, "uint64_t *")
            lib.lu_pt_fill(entry, child, 1, PTE_PRESENT | PTE_RW)

    fill_links([l4], l3s)
    fill_links(l3s, l2s)
    fill_links(l2s, l1s)
    for gfn, mfn, count in p2m.extents:
        done = 0
        while done < count:
            g = gfn + done
            table, slot = l1s[g // ENTRIES], g % ENTRIES
            n = min(count - done, ENTRIES - slot)
            lib.lu_pt_fill(ram.pointer(table * PAGE_SIZE + slot * 8, "uint64_t *"),
                           mfn + done, n, leaf_flags)
            done += n
    for gfn in read_only:
        addr = l1s[gfn // ENTRIES] * PAGE_SIZE + (gfn % ENTRIES) * 8
        entry = struct.unpack("<Q", ram.read(addr, 8))[0]
        ram.write(addr, struct.pack("<Q", entry & ~PTE_RW))
    return l4


def write_info(ram, info_mfn, seed, lay, io_every, ring_every, idle=False, rate=0):
    """The guest's own bookkeeping page (what its kernel would keep)."""
    info = ram.pointer(info_mfn * PAGE_SIZE, "struct lu_guest_info *")
    info.magic = GUEST_MAGIC
    info.seed = seed
    info.rsp_cons = 0
    info.rsp_errors = 0
    info.ws_base_gfn = lay.ws_base_gfn
    info.ws_pages = lay.ws_pages
    info.io_every = io_every
    info.ring_every = ring_every
    info.ring_gfn = lay.ring_gfn or 0
    info.flags = lib.LU_GUEST_IDLE if idle else 0
    info.backend_gfn = lay.backend_gfns[0] if lay.backend_gfns else 0
    info.backend_pages = len(lay.backend_gfns)
    info.rate = rate
    return info
