"""Stream framing and the breadcrumb.

Stream := image header (24 bytes, big-endian: marker ~0, "XENF", version 3,
options 0), the system section (records from LU_VERSION to END), then one
section per domain: domain header (16 bytes: type 1 PV / 2 HVM, page shift
12, Xen major/minor), records, END.  Records are {u32 type, u32 length,
body, zero padding to 8 bytes}, little-endian.

Breadcrumb: the first words of LU bootmem, little-endian u64s: magic, machine
address of the MFN array, stream size (nr_mfns << 12), then this format's
extensions: exact stream length, hash of the stream, hash of the MFN array,
the time (CLOCK_MONOTONIC ns) xen#1 jumped, written last, and the time its
save ended: both for reports only.
"""
import struct

from xen_public import lustream as ls
from xen_public.abi import LU_BREADCRUMB_MAGIC, PAGE_SIZE

from .._lu_core import ffi, lib

IMAGE_HEADER = struct.Struct(">QIIH6x")
DOMAIN_HEADER = struct.Struct("<IHHII")
RECORD_HEADER = struct.Struct("<II")
BREADCRUMB = struct.Struct("<8Q")
EXEC_NS_OFFSET = 48
DOMAIN_TYPE_PV, DOMAIN_TYPE_HVM = 1, 2
_PADDING = [bytes(n) for n in range(8)]
ERRORS = {
    lib.LU_STREAM_TRUNCATED: "runs past the end of the stream",
    lib.LU_STREAM_BAD_HEADER: "bad marker, id, version or options",
    lib.LU_STREAM_UNKNOWN_RECORD: "is a mandatory record type this hypervisor cannot restore",
    lib.LU_STREAM_BAD_PADDING: "has non-zero padding",
    lib.LU_STREAM_TOO_LARGE: "is larger than 128 MiB",
    lib.LU_STREAM_BAD_DOMAIN: "bad type or page shift",
    lib.LU_STREAM_NO_END: "has no END record",
    lib.LU_STREAM_LU_ONLY_HEADER: "system section does not start with LU_VERSION",
    lib.LU_STREAM_RESERVED: "is not zero",
}


class StreamError(Exception):
    """A stream xen#2 refuses; names the record and offset."""


class RestoreFailure(Exception):
    """xen#2 cannot restore: the breadcrumb, MFN array or stream in RAM is
    not what xen#1 left, or a domain's state does not rebuild."""


class StreamWriter:
    def __init__(self, before_new_type=None):
        self.parts = [IMAGE_HEADER.pack(ls.STREAM_MARKER, ls.STREAM_ID, ls.STREAM_VERSION, 0)]
        self.types = set()
        # Called with the base type before the first record of each kind.
        self.before_new_type = before_new_type

    def record(self, rtype, body=b""):
        base = rtype & ~ls.REC_OPTIONAL
        if base not in self.types:
            if self.before_new_type:
                self.before_new_type(base)
            self.types.add(base)
        n = len(body)
        self.parts += (RECORD_HEADER.pack(rtype, n), body, _PADDING[-n % 8])

    def end(self):
        self.record(ls.REC_END)

    def domain(self, dtype_code, xen_major, xen_minor):
        self.parts.append(DOMAIN_HEADER.pack(dtype_code, 12, 0, xen_major, xen_minor))

    def getvalue(self):
        return b"".join(self.parts)


def validate(buf, known_types):
    """Framing of the whole stream (C core); returns the record count."""
    known = ffi.new("uint32_t[]", sorted(known_types) or [0])
    bad_off, bad_type = ffi.new("uint64_t *"), ffi.new("uint32_t *")
    view = ffi.from_buffer("uint8_t[]", buf)
    n = lib.lu_stream_validate(view, len(buf), known, len(known_types), bad_off, bad_type)
    if n < 0:
        what = ERRORS.get(n, "is invalid (%d)" % n)
        if n == lib.LU_STREAM_RESERVED:
            header = "image header at offset 0x0" if bad_off[0] < IMAGE_HEADER.size else \
                "domain header at offset 0x%x" % (bad_off[0] - 6)
            raise StreamError("%s: reserved field at offset 0x%x %s" % (header, bad_off[0], what))
        if n == lib.LU_STREAM_BAD_HEADER or (n == lib.LU_STREAM_TRUNCATED and not bad_off[0]):
            raise StreamError("image header at offset 0x0: %s" % what)
        if n == lib.LU_STREAM_BAD_DOMAIN or (n == lib.LU_STREAM_TRUNCATED and not bad_type[0] and bad_off[0]):
            raise StreamError("domain header at offset 0x%x: %s" % (bad_off[0], what))
        if n == lib.LU_STREAM_NO_END:
            raise StreamError("the section reaching offset 0x%x %s" % (bad_off[0], what))
        raise StreamError("record %s at offset 0x%x %s" % (ls.record_name(bad_type[0]), bad_off[0], what))
    return n


def iter_sections(buf):
    """Yield (domain_header or None, [(offset, type, body)]) per section of
    an already validated stream: the system section first (no header)."""
    off, first = IMAGE_HEADER.size, True
    while off < len(buf):
        header = None
        if not first:
            header = DOMAIN_HEADER.unpack_from(buf, off)
            off += DOMAIN_HEADER.size
        records = []
        while True:
            rtype, length = RECORD_HEADER.unpack_from(buf, off)
            records.append((off, rtype, bytes(buf[off + 8:off + 8 + length])))
            off += 8 + length + (-length % 8)
            if rtype == ls.REC_END:
                break
        yield header, records
        first = False


def pack_breadcrumb(mfn_array_maddr, nr_mfns, stream_len, stream_hash, array_hash, save_end_ns=0):
    return BREADCRUMB.pack(LU_BREADCRUMB_MAGIC, mfn_array_maddr, nr_mfns << 12, stream_len,
                           stream_hash, array_hash, 0, save_end_ns)


def read_breadcrumb(raw):
    """-> dict, or None if there is no breadcrumb."""
    magic, array, size, length, shash, ahash, exec_ns, save_end_ns = BREADCRUMB.unpack_from(raw)
    if magic != LU_BREADCRUMB_MAGIC:
        return None
    return {"mfn_array": array, "nr_mfns": size >> 12, "size": size, "length": length,
            "stream_hash": shash, "array_hash": ahash, "exec_ns": exec_ns,
            "save_end_ns": save_end_ns}


def hash64(data):
    return lib.lu_hash64(ffi.from_buffer("uint8_t[]", data), len(data))


def mfn_array_frames(nr_mfns):
    return -(-nr_mfns * 8 // PAGE_SIZE)
