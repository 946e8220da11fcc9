"""Record bodies of the live-update stream: one small codec per record type.

Every body is little-endian and holds minimal, version-stable facts (extents,
types, ports, registers), never a hypervisor's internal structures.  decode()
raises RecordError when a body is malformed; the caller adds the offset.
"""
import struct

from . import lustream as ls
from .errors import FormatError


class RecordError(FormatError):
    pass


class Codec(tuple):
    """(pack, unpack) of one record body, with its structs: head, and item
    for an array (None for a fixed body), for a writer that builds items in
    bulk.  A plain tuple subclass: xen#2 imports this on its way up."""

    def __new__(cls, pack, unpack, head, item=None):
        self = tuple.__new__(cls, (pack, unpack))
        self.head, self.item = head, item
        return self


def _array(head_fmt, item_fmt):
    head, item = struct.Struct("<" + head_fmt), struct.Struct("<" + item_fmt)

    def pack(head_values, items):
        return head.pack(*head_values) + b"".join(item.pack(*i) for i in items)

    def unpack(body):
        values, items = _split_array(head, item, body)
        return values, list(item.iter_unpack(items))
    return Codec(pack, unpack, head, item)


def _split_array(head, item, body):
    """(header values, the items' bytes), the body's length checked."""
    if len(body) < head.size:
        raise RecordError("body of %d bytes is shorter than its %d-byte header" % (len(body), head.size))
    values = head.unpack_from(body)
    count = values[0]
    if head.size + count * item.size != len(body):
        raise RecordError("says %d entries of %d bytes but holds %d bytes"
                          % (count, item.size, len(body) - head.size))
    return values, body[head.size:]


def unpack_raw(codec, body):
    """An array record as (header values, items as bytes), checked as
    unpack checks it: for per-page records the C core reads whole."""
    values, items = _split_array(codec.head, codec.item, body)
    return values, bytes(items)


def _fixed(fmt):
    s = struct.Struct("<" + fmt)

    def unpack(body):
        if len(body) != s.size:
            raise RecordError("body is %d bytes, expected %d" % (len(body), s.size))
        return s.unpack(body)
    return Codec(s.pack, unpack, s)


# System section.
VERSION = _fixed("IIII")                 # xen_major, xen_minor, lu_format, nr_domains
REGION_FRAMETABLE, REGION_CRASH = 1, 2
XEN_REGIONS = _array("II", "QQII")       # count, 0 | start_mfn, nr_frames, kind, 0
M2P = _fixed("QQ")                       # start_mfn, nr_entries
TIMINGS = _array("IIQ", "16sQQ")         # count, 0, update id | phase name, start_ns, end_ns

# Domain section.
DOM_CONTROL, DOM_PAUSED, DOM_DYING = 1, 2, 4
DTYPES = {"pv": 0, "pvh": 1, "hvm": 2}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
DOMAIN = _fixed("HHIIIQ64s")             # domid, flags, dtype, vcpus, 0, shared_info_mfn, name
PV_INFO = _fixed("BB6x")                 # guest_width, pt_levels (migration v3 X86_PV_INFO)
P2M_EXTENTS = _array("II", "QQQ")        # count, 0 | gfn, mfn, count
OWN_RAM, OWN_SHARED = 1, 2
OWNERSHIP = _array("II", "QQII")         # count, 0 | mfn, count, kind, 0
PT_PINNED = 1
PV_PAGE_TYPES = _array("II", "QII")      # count, 0 | mfn, type (Xen PGT_*), flags
GRANT_TABLE = _array("II", "Q")          # nr_frames, version | frame mfn
GRANT_STATUS = _array("II", "Q")         # nr_frames, 0 | status frame mfn
EVTCHN_FIFO = _fixed("QQ")               # event array gfn, control block gfn
PORT_KINDS = {"unbound": 1, "interdomain": 2, "virq": 3, "ipi": 4}
PORT_KIND_NAMES = {v: k for k, v in PORT_KINDS.items()}
NO_DOMID = 0x7FF4                        # DOMID_INVALID
EVTCHN_PORTS = _array("II", "IBBHIIII")  # count, 0 | port, kind, 0, vcpu, remote domid, remote port, virq, 0
VCPU = _fixed("IIII Q 18Q Q".replace(" ", ""))   # vcpu, runstate, paused, 0, steps, regs, cr3 mfn
HVM_PARAMS = _array("II", "QQ")          # count, 0 | index, value (migration v3 HVM_PARAMS)
IOREQ_SERVER = _array("IHHQQI", "II")    # nr_ports, server id, dm domid, ioreq gfn, bufioreq gfn, 0 | guest port, dm port
MAP_WRITABLE = 1
GRANT_MAPS = _array("II", "IHHIIQ")      # count, 0 | handle, granter, flags, ref, 0, mfn
FOREIGN_MAPS = _array("II", "HHIQQ")     # count, 0 | domid, 0, 0, gfn, mfn
IOMMU = _array("IIQ", "QQ")              # nr_extents, nr_devices, root mfn | mfn, count ; then devices
BDF = struct.Struct("<16s")

REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")

# The pass each record type is restored in (system records: None).
PASS = {
    ls.REC_LU_DOMAIN: 0, ls.REC_X86_PV_INFO: 0, ls.REC_LU_P2M_EXTENTS: 0,
    ls.REC_LU_PAGE_OWNERSHIP: 1, ls.REC_LU_PV_PAGE_TYPES: 1, ls.REC_LU_GRANT_TABLE: 1,
    ls.REC_LU_GRANT_STATUS: 1,
    ls.REC_LU_EVTCHN_FIFO: 2, ls.REC_LU_EVTCHN_PORTS: 2, ls.REC_LU_VCPU_STATE: 2,
    ls.REC_HVM_PARAMS: 2, ls.REC_LU_IOREQ_SERVER: 2, ls.REC_LU_GRANT_MAPS: 2,
    ls.REC_LU_FOREIGN_MAPS: 2, ls.REC_LU_IOMMU: 2,
}


def pack_iommu(root_mfn, extents, devices):
    pack, _ = IOMMU
    return pack((len(extents), len(devices), root_mfn), extents) + \
        b"".join(BDF.pack(d.encode()) for d in devices)


def unpack_iommu(body):
    head = struct.Struct("<IIQ")
    if len(body) < head.size:
        raise RecordError("IOMMU body too short")
    n_ext, n_dev, root = head.unpack_from(body)
    need = head.size + 16 * n_ext + BDF.size * n_dev
    if need != len(body):
        raise RecordError("IOMMU body of %d bytes, its counts need %d" % (len(body), need))
    ext = [struct.unpack_from("<QQ", body, head.size + 16 * i) for i in range(n_ext)]
    base = head.size + 16 * n_ext
    devs = [BDF.unpack_from(body, base + BDF.size * i)[0].rstrip(b"\0").decode("ascii", "replace")
            for i in range(n_dev)]
    return root, ext, devs


def cstr(raw):
    return raw.rstrip(b"\0").decode("utf-8", "replace")
