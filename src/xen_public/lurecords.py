"""The record bodies of the live-update stream, declared once.

Each record type is one object: its number, the section it belongs in, the
restore pass that applies it, and its layout, field by field as
kexec-lu-stream(5) names them.  Everyone decodes through it (xen#2's check
and restore, `hyperv-sim stream dump`, the fuzz harness) and writers encode
through it, the shape of Xen's tools/python/xen/migration: one small
description per record type, errors that say what is wrong and where.

decode(body, at) checks the body's length against the layout and its
counts, and that every field called reserved is zero; it raises RecordError
naming the offending offset in the stream (at is where the body starts).
It returns plain tuples (xen#2 decodes inside the blackout), named ones
with named=True (`stream dump`, tests).
Every body is little-endian and holds minimal, version-stable facts
(extents, types, ports, registers), never a hypervisor's internal structures.
"""
import struct
from collections import namedtuple
from operator import itemgetter

from . import abi
from . import lustream as ls
from .errors import FormatError


class RecordError(FormatError):
    pass


def _nonzero(value):
    return any(value) if isinstance(value, bytes) else value != 0


class Layout:
    """A fixed run of named fields: [(name, struct format)].  Fields whose
    name starts with "reserved" must be zero."""

    def __init__(self, name, fields):
        self.name = name
        self.names = tuple(n for n, _ in fields)
        self.struct = struct.Struct("<" + "".join(f for _, f in fields))
        self.size = self.struct.size
        self._tuple = None
        self.reserved = tuple((i, struct.calcsize("<" + "".join(f for _, f in fields[:i])))
                              for i, (n, _) in enumerate(fields) if n.startswith("reserved"))
        # (offset, size) of each reserved field, for checking many items at once.
        self.reserved_spans = tuple((off, struct.calcsize("<" + fields[i][1])) for i, off in self.reserved)

    @property
    def tuple(self):
        """The named tuple of these fields, made on first use: xen#2 decodes
        plain tuples inside the blackout, and 25 namedtuple classes would
        cost it 1.6 ms of imports."""
        if self._tuple is None:
            self._tuple = namedtuple(self.name, self.names)
        return self._tuple

    def pack(self, *values):
        return self.struct.pack(*values)

    def check_reserved(self, values, at):
        for i, off in self.reserved:
            if _nonzero(values[i]):
                raise RecordError("reserved field at offset 0x%x is not zero" % (at + off))

    def check_reserved_items(self, data, count, at):
        """The reserved fields of count items packed in data, all at once:
        each byte column of a field is one strided slice (no Python loop
        per item: a stream has an item per port, grant, extent).  Names the
        first item's first non-zero field, as check_reserved would."""
        if not isinstance(data, bytes):
            data = bytes(data)              # a view of the stream: strided slices need bytes
        first = None
        for off, size in self.reserved_spans:
            for k in range(size):
                column = data[off + k::self.size]
                if column.count(0) != count:
                    n = count - len(column.lstrip(b"\0"))
                    if first is None or (n, off) < first:
                        first = (n, off)
        if first is not None:
            n, off = first
            raise RecordError("reserved field at offset 0x%x is not zero" % (at + n * self.size + off))


class ArrayValue(tuple):
    """(head, items) of an array record.  A tuple with two names, not a
    namedtuple: made at import, that would cost xen#2's blackout."""
    __slots__ = ()
    head = property(itemgetter(0))
    items = property(itemgetter(1))

    def __new__(cls, head, items):
        return tuple.__new__(cls, (head, items))


class IommuValue(tuple):
    """(root, extents, devices) of an LU_IOMMU record."""
    __slots__ = ()
    root = property(itemgetter(0))
    extents = property(itemgetter(1))
    devices = property(itemgetter(2))

    def __new__(cls, root, extents, devices):
        return tuple.__new__(cls, (root, extents, devices))


class RecordType:
    """What every record type has; decode, encode and count are the kind's."""

    def __init__(self, rtype, restore_pass):
        self.rtype = rtype
        self.name = ls.record_name(rtype)
        self.restore_pass = restore_pass          # None: the system section
        self.section = "system" if restore_pass is None else "domain"


class Fixed(RecordType):
    """A body of exactly one layout; decodes to a named tuple."""

    def __init__(self, rtype, restore_pass, fields):
        super().__init__(rtype, restore_pass)
        self.layout = Layout(ls.record_name(rtype), fields)

    def encode(self, *values):
        return self.layout.pack(*values)

    def decode(self, body, at=0, named=False):
        lay = self.layout
        if len(body) != lay.size:
            raise RecordError("body is %d bytes, expected %d" % (len(body), lay.size))
        value = lay.struct.unpack(body)
        lay.check_reserved(value, at)
        return lay.tuple._make(value) if named else value

    def count(self, value):
        return 1


class Array(RecordType):
    """A head whose first field counts the items that follow; decodes to
    ArrayValue(head, [item]).  raw: the items stay bytes, for the C core to
    read whole (per-page records)."""

    def __init__(self, rtype, restore_pass, head, item, raw=False):
        super().__init__(rtype, restore_pass)
        self.head = Layout(self.name + "_head", head)
        self.item = Layout(self.name + "_item", item)
        self.raw = raw
        assert not (raw and self.item.reserved), "raw items are not checked field by field"

    def encode(self, head_values, items):
        pack = self.item.struct.pack
        return self.head.pack(*head_values) + b"".join(pack(*i) for i in items)

    def decode(self, body, at=0, named=False):
        head, item = self.head, self.item
        if len(body) < head.size:
            raise RecordError("body of %d bytes is shorter than its %d-byte header" % (len(body), head.size))
        values = head.struct.unpack_from(body)
        count = values[0]
        if head.size + count * item.size != len(body):
            raise RecordError("says %d entries of %d bytes but holds %d bytes"
                              % (count, item.size, len(body) - head.size))
        head.check_reserved(values, at)
        if named:
            values = head.tuple._make(values)
        rest = body[head.size:]
        if self.raw:
            return ArrayValue(values, bytes(rest))
        if item.reserved:
            item.check_reserved_items(rest, count, at + head.size)
        items = list(item.struct.iter_unpack(rest))
        return ArrayValue(values, list(map(item.tuple._make, items)) if named else items)

    def count(self, value):
        return value.head[0]

    def item_tuples(self, value):
        """The items as named tuples, raw ones included."""
        if not self.raw:
            return value.items
        return list(map(self.item.tuple._make, self.item.struct.iter_unpack(value.items)))


class Iommu(RecordType):
    """LU_IOMMU: a head, then two arrays (table extents, device BDFs)."""

    def __init__(self, rtype, restore_pass):
        super().__init__(rtype, restore_pass)
        self.head = Layout("LU_IOMMU_head", [("nr_extents", "I"), ("nr_devices", "I"), ("root_mfn", "Q")])
        self.extent = Layout("LU_IOMMU_extent", [("mfn", "Q"), ("count", "Q")])
        self.bdf = Layout("LU_IOMMU_device", [("bdf", "16s")])

    def encode(self, root_mfn, extents, devices):
        return (self.head.pack(len(extents), len(devices), root_mfn)
                + b"".join(self.extent.pack(*e) for e in extents)
                + b"".join(self.bdf.pack(d.encode()) for d in devices))

    def decode(self, body, at=None, named=None):
        # at and named are the common signature's: no reserved field, no names.
        head, ext, bdf = self.head, self.extent, self.bdf
        if len(body) < head.size:
            raise RecordError("IOMMU body too short")
        n_ext, n_dev, root = head.struct.unpack_from(body)
        need = head.size + ext.size * n_ext + bdf.size * n_dev
        if need != len(body):
            raise RecordError("IOMMU body of %d bytes, its counts need %d" % (len(body), need))
        base = head.size + ext.size * n_ext
        extents = list(ext.struct.iter_unpack(body[head.size:base]))
        devices = [cstr(d, "ascii") for (d,) in bdf.struct.iter_unpack(body[base:])]
        return IommuValue(root, extents, devices)

    def count(self, value):
        return len(value.extents) + len(value.devices)


def cstr(raw, encoding="utf-8"):
    return raw.rstrip(b"\0").decode(encoding, "replace")


RES32 = ("reserved", "I")

# System section.
# xen_extra is Xen's xen_extraversion_t: ".0", ".2-pre", "-rc", NUL-padded.
VERSION = Fixed(ls.REC_LU_VERSION, None, [("xen_major", "I"), ("xen_minor", "I"), ("lu_format", "I"),
                                          ("nr_domains", "I"), ("xen_extra", "16s")])
# LU_XEN_REGIONS kinds: xen#1's frame table (xen#2 takes it over), the
# crashkernel= region, the IOMMU's root and context tables and invalidation
# queue (hardware reads them throughout: never allocated, never scrubbed).
REGION_FRAMETABLE, REGION_CRASH, REGION_IOMMU = 1, 2, 3
XEN_REGIONS = Array(ls.REC_LU_XEN_REGIONS, None, [("count", "I"), RES32],
                    [("start_mfn", "Q"), ("nr_frames", "Q"), ("kind", "I"), RES32])
M2P = Fixed(ls.REC_LU_M2P, None, [("start_mfn", "Q"), ("nr_entries", "Q")])
TIMINGS = Array(ls.REC_LU_TIMINGS, None, [("count", "I"), RES32, ("update_id", "Q")],
                [("name", "16s"), ("start_ns", "Q"), ("end_ns", "Q")])
# The loaded crash image (type KEXEC_TYPE_CRASH, the one kind a live update
# carries: its bytes lie in the crashkernel= region both hypervisors keep).
# sha256 covers each loaded segment as Xen places it: its destination (u64
# little-endian), then its bytes, zero-filled to dest_size.
SEG_MAPPED_ONLY = 1                      # a NULL buffer: mapped, holds nothing
KEXEC_IMAGE = Array(ls.REC_LU_KEXEC_IMAGE, None,
                    [("nr_segments", "I"), ("ktype", "B"), ("reserved", "B"), ("arch", "H"),
                     ("entry", "Q"), ("sha256", "32s")],
                    [("dest", "Q"), ("dest_size", "Q"), ("buf_size", "Q"), ("flags", "I"), RES32])

# Domain section.
DOM_CONTROL, DOM_PAUSED, DOM_DYING = 1, 2, 4
DTYPES = {"pv": 0, "pvh": 1, "hvm": 2}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
DOMAIN = Fixed(ls.REC_LU_DOMAIN, 0, [("domid", "H"), ("flags", "H"), ("dtype", "I"), ("vcpus", "I"),
                                     RES32, ("shared_info_mfn", "Q"), ("name", "64s")])
PV_INFO = Fixed(ls.REC_X86_PV_INFO, 0, [("guest_width", "B"), ("pt_levels", "B"), ("reserved", "6s")])
P2M_EXTENTS = Array(ls.REC_LU_P2M_EXTENTS, 0, [("count", "I"), RES32],
                    [("gfn", "Q"), ("mfn", "Q"), ("count", "Q")])
OWN_RAM, OWN_SHARED = 1, 2
OWNERSHIP = Array(ls.REC_LU_PAGE_OWNERSHIP, 1, [("count", "I"), RES32],
                  [("mfn", "Q"), ("count", "Q"), ("kind", "I"), RES32])
PT_PINNED = 1
PV_PAGE_TYPES = Array(ls.REC_LU_PV_PAGE_TYPES, 1, [("count", "I"), RES32],
                      [("mfn", "Q"), ("type", "I"), ("flags", "I")], raw=True)
GRANT_TABLE = Array(ls.REC_LU_GRANT_TABLE, 1, [("nr_frames", "I"), ("version", "I")], [("mfn", "Q")])
GRANT_STATUS = Array(ls.REC_LU_GRANT_STATUS, 1, [("nr_frames", "I"), RES32], [("mfn", "Q")])
EVTCHN_FIFO = Fixed(ls.REC_LU_EVTCHN_FIFO, 2, [("event_array_gfn", "Q"), ("control_block_gfn", "Q")])
PORT_KINDS = {"unbound": 1, "interdomain": 2, "virq": 3, "ipi": 4}
PORT_KIND_NAMES = {v: k for k, v in PORT_KINDS.items()}
NO_DOMID = 0x7FF4                        # DOMID_INVALID
EVTCHN_PORTS = Array(ls.REC_LU_EVTCHN_PORTS, 2, [("count", "I"), RES32],
                     [("port", "I"), ("kind", "B"), ("reserved", "B"), ("vcpu", "H"),
                      ("remote_domid", "I"), ("remote_port", "I"), ("virq", "I"), ("reserved2", "I")])
REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")
VCPU = Fixed(ls.REC_LU_VCPU_STATE, 2, [("vcpu", "I"), ("runstate", "I"), ("paused", "I"), RES32,
                                       ("steps", "Q")] + [(r, "Q") for r in REG_NAMES]
             + [("cr3_mfn", "Q")])
HVM_PARAMS = Array(ls.REC_HVM_PARAMS, 2, [("count", "I"), RES32], [("index", "Q"), ("value", "Q")])
# The parameters libxc's save writes to HVM_PARAMS, in its order, each only
# when non-zero (write_hvm_params in tools/libs/guest/xg_sr_save_x86_hvm.c).
# Every other parameter (the xenstore and console ports, the timer mode,
# HPET) is set by the toolstack on the migration target; a live update has
# no toolstack in between, so LU_HVM_PARAMS carries those.
MIGRATED_HVM_PARAMS = (
    abi.HVM_PARAM_STORE_PFN, abi.HVM_PARAM_IOREQ_PFN, abi.HVM_PARAM_BUFIOREQ_PFN,
    abi.HVM_PARAM_PAGING_RING_PFN, abi.HVM_PARAM_MONITOR_RING_PFN, abi.HVM_PARAM_SHARING_RING_PFN,
    abi.HVM_PARAM_VM86_TSS_SIZED, abi.HVM_PARAM_CONSOLE_PFN, abi.HVM_PARAM_ACPI_IOPORTS_LOCATION,
    abi.HVM_PARAM_VIRIDIAN, abi.HVM_PARAM_IDENT_PT, abi.HVM_PARAM_VM_GENERATION_ID_ADDR,
    abi.HVM_PARAM_IOREQ_SERVER_PFN, abi.HVM_PARAM_NR_IOREQ_SERVER_PAGES, abi.HVM_PARAM_X87_FIP_WIDTH,
    abi.HVM_PARAM_MCA_CAP)
LU_HVM_PARAMS = Array(ls.REC_LU_HVM_PARAMS, 2, [("count", "I"), RES32], [("index", "Q"), ("value", "Q")])
IOREQ_SERVER = Array(ls.REC_LU_IOREQ_SERVER, 2,
                     [("nr_ports", "I"), ("server_id", "H"), ("dm_domid", "H"), ("ioreq_gfn", "Q"),
                      ("bufioreq_gfn", "Q"), RES32],
                     [("guest_port", "I"), ("dm_port", "I")])
MAP_WRITABLE = 1
GRANT_MAPS = Array(ls.REC_LU_GRANT_MAPS, 2, [("count", "I"), RES32],
                   [("handle", "I"), ("granter", "H"), ("flags", "H"), ("ref", "I"), RES32, ("mfn", "Q")])
FOREIGN_MAPS = Array(ls.REC_LU_FOREIGN_MAPS, 2, [("count", "I"), RES32],
                     [("domid", "H"), ("reserved", "H"), ("reserved2", "I"), ("gfn", "Q"), ("mfn", "Q")])
IOMMU = Iommu(ls.REC_LU_IOMMU, 2)

# Every record type this format defines, by number (REC_END has no body).
TYPES = {t.rtype: t for t in (VERSION, XEN_REGIONS, M2P, TIMINGS, KEXEC_IMAGE, DOMAIN, PV_INFO, P2M_EXTENTS,
                              OWNERSHIP, PV_PAGE_TYPES, GRANT_TABLE, GRANT_STATUS, EVTCHN_FIFO,
                              EVTCHN_PORTS, VCPU, HVM_PARAMS, LU_HVM_PARAMS, IOREQ_SERVER, GRANT_MAPS,
                              FOREIGN_MAPS, IOMMU)}
SYSTEM_TYPES = frozenset(t for t, r in TYPES.items() if r.section == "system")
