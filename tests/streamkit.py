"""What the stream tests share: a saved stream of a small host, ways to
rewrite it record by record, and refusal helpers that also prove the
refusal changed nothing (every byte of host RAM, the allocator, domains,
mappings) and note which refusal site of xen#2's restore raised, for
test_restore_refusals' coverage test."""
import contextlib
import os
import struct

import pytest

from hyperv_sim._lu_core import ffi, lib
from hyperv_sim.liveupdate import apply, check as checks, handover, mapped
from hyperv_sim.liveupdate.report import Report
from hyperv_sim.liveupdate.check import check, decode
from hyperv_sim.liveupdate.save import build_stream
from hyperv_sim.liveupdate.stream import DOMAIN_HEADER, IMAGE_HEADER, RECORD_HEADER, RestoreFailure, StreamError, \
    hash64, iter_sections
from xen_public import abi, lustream as ls
from xen_public.units import GiB, MiB

from helpers import make_hypervisor, power_off

KNOWN = set(ls.ALL_RECORD_TYPES)
PAGE = 4096


class FakeStream:
    """Where the stream's own pages are, as MappedStream would say."""

    def __init__(self, extents=()):
        self._extents = list(extents)

    def extents(self):
        return self._extents


CRASH_BYTES = bytes(range(256)) * 48         # 12 KiB of a crash kernel


def load_crash_image(hv):
    """A crash image as kexec-tools loads one: 12 KiB in a 32 KiB segment at
    the crash region's start, and the first MiB mapped only (a NULL buffer)."""
    base = hv.crash_region[0]
    hv.kexec.load(abi.KEXEC_TYPE_CRASH, abi.EM_X86_64, base + PAGE,
                  [(1, len(CRASH_BYTES), base, 8 * PAGE), (None, 0, 0, MiB)],
                  lambda handle, n: CRASH_BYTES[:n])


def small_host(state_dir, image):
    """dom0 (PV, control) and four guests: PV, PVH with FIFO and grant v2,
    HVM with a device model in dom0 and a passed-through device, a tiny PVH;
    a crash image loaded.  Between them every record type a stream can carry."""
    # ram_sparse: the checks below compare RAM by its data extents, which
    # reserved (unwritten) extents would blur; reservation has its own tests.
    hv = make_hypervisor(state_dir, image, memory=4 * GiB,
                         cmdline="liveupdate=64M dom0_mem=512M crashkernel=64M ram_sparse")
    try:
        load_crash_image(hv)
        hv.create_domain("pv", "pv", 128 * MiB, 2)
        hv.create_domain("pvh", "pvh", 128 * MiB, 1, evtchn_abi="fifo", grant_version=2)
        hv.create_domain("hvm", "hvm", 128 * MiB, 2, pci=["0000:03:00.0"])
        hv.create_domain("tiny", "pvh", 16 * MiB, 1)
    except BaseException:
        power_off(hv)
        raise
    return hv


class Saved(tuple):
    """(hv, stream, record types), shown short in a failing test's report."""

    def __repr__(self):
        return "<saved stream of %d bytes>" % len(self[1])


def save(hv):
    with hv.sched.stopped():
        return build_stream(hv, [("save", 1, 2)], set(), update_id=7)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, sim_images):
    hv = small_host(tmp_path_factory.mktemp("s") / "h", sim_images["4.18"])
    try:
        yield Saved((hv,) + save(hv))
    finally:
        power_off(hv)


def context_entry_address(hv, sid):
    """Where the device's context entry is, in the running IOMMU's tables."""
    root = hv.chipset.regs.rtaddr_active
    lo, = struct.unpack("<Q", hv.ram.read(root + (sid >> 8) * 16, 8))
    return (lo & 0x000FFFFFFFFFF000) + (sid & 0xFF) * 16


def ranges(hv):
    """(LU bootmem, hypervisor image) as (first frame, frames), as xen#2 passes them."""
    xen_first = hv.xen_start // PAGE
    return ((hv.lu_start // PAGE, hv.lu_size // PAGE),
            (xen_first, -(-(hv.xen_start + hv.xen_size) // PAGE) - xen_first))


def accept(hv, data, known=KNOWN, stream=None):
    system, plans = decode(data, known)
    lu, xen = ranges(hv)
    return check(hv, system, plans, stream or FakeStream(), lu, xen)


# ---------------------------------------------------------------- the stream, record by record

def records(data):
    """[(offset, type, body)] over the whole stream."""
    return [r for _, recs in iter_sections(data) for r in recs]


def sections(data):
    """The stream as [[domain header or None, [[type, body], ...]], ...], to edit."""
    return [[header, [[t, body] for _, t, body in recs]] for header, recs in iter_sections(data)]


def assemble(secs, image_header=None):
    """sections() back into a stream, every length and padding recomputed."""
    out = [image_header or IMAGE_HEADER.pack(ls.STREAM_MARKER, ls.STREAM_ID, ls.STREAM_VERSION, 0)]
    for header, recs in secs:
        if header is not None:
            out.append(DOMAIN_HEADER.pack(*header))
        for t, body in recs:
            out += [RECORD_HEADER.pack(t, len(body)), body, bytes(-len(body) % 8)]
    return b"".join(out)


def at(data, rtype, nth=0):
    """(offset, body) of the nth record of rtype (optional bit ignored)."""
    return [(off, body) for off, t, body in records(data) if t & ~ls.REC_OPTIONAL == rtype][nth]


def offset(data, rtype, nth=0):
    return at(data, rtype, nth)[0]


def value(data, codec, rtype, nth=0):
    """The nth record of rtype decoded with its xen_public.lurecords type."""
    return codec.decode(at(data, rtype, nth)[1])


def replace_body(data, rtype, new_body, nth=0):
    """The stream with the nth record of rtype given a new body (any length)."""
    secs = sections(data)
    found = [r for _, recs in secs for r in recs if r[0] & ~ls.REC_OPTIONAL == rtype]
    found[nth][1] = new_body
    return assemble(secs, data[:IMAGE_HEADER.size])


def replace(data, codec, rtype, new_value, nth=0):
    """replace_body with a value its xen_public.lurecords type encodes:
    (head, items) for an array record, the field tuple for a fixed one."""
    return replace_body(data, rtype, codec.encode(*new_value), nth)


# ---------------------------------------------------------------- nothing changed

def ram_image(ram):
    """Every byte of host RAM: the data extents of its sparse file (holes
    read as zeros, and a write into one makes it data) and a digest of each."""
    out, off = [], 0
    while off < ram.size:
        try:
            start = os.lseek(ram.fd, off, os.SEEK_DATA)
        except OSError:         # ENXIO: nothing but hole after off
            break
        end = os.lseek(ram.fd, start, os.SEEK_HOLE)
        out.append((start, end, lib.lu_digest64(ram.base + start, end - start)))
        off = end
    return out


def hv_state(hv):
    """What a refused check or map could have changed, comparable with ==.
    Call with the vCPUs stopped: running guests change their memory."""
    return {
        "ram": ram_image(hv.ram),
        # Rebinding any attribute (a new frame table, mappings, domains) shows.
        "attributes": {k: id(v) for k, v in vars(hv).items()},
        "free": hv.allocator.free_extents(),
        "domains": {d: (id(dom), dom.details(), bytes(ffi.buffer(dom.vcpu_state)))
                    for d, dom in hv.domains.items()},
        "mappings": (hv.mappings.describe(), hv.mappings._next_handle),
        "pci": dict(hv.pci_assigned),
        "backend_slots": list(hv.backend_slots),
        # The hardware: not one register of the chipset written.
        "chipset": bytes(hv.chipset.map),
    }


def assert_unchanged(before, after):
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, "a refusal changed the hypervisor's %s" % ", ".join(changed)


# ---------------------------------------------------------------- refusals, and where they came from

# The modules whose refusals test_restore_refusals accounts for, by name.
REFUSING = {m.__name__.rsplit(".", 1)[1]: m for m in (mapped, checks, apply)}
PRODUCED = {}       # "module::test" -> [(message, (module name, line that raised))]
CURRENT = []        # the test test_restore_refusals runs itself, if any


def _test_name():
    if CURRENT:
        return CURRENT[-1]
    where = os.environ.get("PYTEST_CURRENT_TEST", "?::?").split(" ")[0]
    path, _, func = where.partition("::")
    return "%s::%s" % (os.path.basename(path)[:-3], func.split("[")[0])


def raising_line(tb):
    """(module, line) of the refusing modules that raised: the deepest frame
    there, or for _fail, the line that called it."""
    frames = []
    while tb is not None:
        for name, module in REFUSING.items():
            if os.path.samefile(tb.tb_frame.f_code.co_filename, module.__file__):
                frames.append((tb.tb_frame.f_code.co_name, name, tb.tb_lineno))
        tb = tb.tb_next
    while frames and frames[-1][0] == "_fail":
        frames.pop()
    return frames[-1][1:] if frames else None


def note(excinfo):
    message = str(excinfo.value)
    PRODUCED.setdefault(_test_name(), []).append((message, raising_line(excinfo.tb)))
    return message


def refuse(hv, data, expected, known=KNOWN):
    """check() refuses data with exactly `expected`, and changes nothing."""
    with hv.sched.stopped():
        before = hv_state(hv)
        with pytest.raises(StreamError) as e:
            accept(hv, data, known)
        after = hv_state(hv)
    message = note(e)
    assert message == expected
    assert_unchanged(before, after)
    return message


@contextlib.contextmanager
def handed_over(hv, data):
    """data in stream pages with its MFN array and breadcrumb, as xen#1's
    hand-over leaves them; all given back afterwards."""
    with hv.sched.stopped():
        free = hv.allocator.free_extents()
        pages = handover.StreamPages(hv, data)
        try:
            pages.build_mfn_array()
            pages.write_breadcrumb(0)
            yield pages
        finally:
            pages.release()
            handover.clear_breadcrumb(hv)
    assert hv.allocator.free_extents() == free


def crumb(hv, word, v):
    """Set the breadcrumb's word'th u64 (kexec-lu-stream(5): 1 array, 2 size, 3 length, 5 array hash)."""
    hv.ram.write(hv.lu_start + 8 * word, struct.pack("<Q", v))


def set_array(hv, pages, mfns):
    """The MFN array rewritten, its hash in the breadcrumb made to match: only the entries are wrong."""
    raw = struct.pack("<%dQ" % len(mfns), *mfns)
    hv.ram.write(pages.array_maddr, raw)
    crumb(hv, 5, hash64(raw))


def mfns_of(pages):
    return [pages.mfns[i] for i in range(pages.nr)]


def map_stream(hv):
    return mapped.MappedStream(hv.ram, hv.lu_start, hv.lu_size, hv.xen_start, hv.xen_size)


def refuse_map(hv, expected):
    """Mapping the stream from RAM is refused with exactly `expected`, and
    changes nothing."""
    with hv.sched.stopped():
        before = hv_state(hv)
        with pytest.raises(RestoreFailure) as e:
            map_stream(hv)
        after = hv_state(hv)
    message = note(e)
    assert message == expected
    assert_unchanged(before, after)
    return message


def ram_image_but(ram, first, end):
    """ram_image without the bytes [first, end)."""
    out = []
    for start, stop, _ in ram_image(ram):
        for lo, hi in ((start, min(stop, first)), (max(start, end), stop)):
            if lo < hi:
                out.append((lo, hi, lib.lu_digest64(ram.base + lo, hi - lo)))
    return out


def refuse_restore(hv, data, expected):
    """data passes every check, and the restore passes then refuse it with
    exactly `expected`, leaving every byte of RAM but the frame table they
    rebuild first (guest memory, M2P, IOMMU tables, breadcrumb) as it was.
    They rebuild the hypervisor too: hv is spent after."""
    hv.sched.shutdown()
    system, plans = decode(data, KNOWN)
    lu, xen = ranges(hv)
    facts = check(hv, system, plans, FakeStream(), lu, xen)
    ft_start, ft_frames, _, _ = facts.frametable
    ft = (ft_start * PAGE, (ft_start + ft_frames) * PAGE)
    before = ram_image_but(hv.ram, *ft)
    hv.lu_report = Report()
    with pytest.raises(RestoreFailure) as e:
        apply.restore(hv, FakeStream(), plans, facts)
    message = note(e)
    assert message == expected
    assert ram_image_but(hv.ram, *ft) == before, "a refused restore changed RAM outside its frame table"
    return message


@contextlib.contextmanager
def spare_host(tmp_path_factory, sim_images):
    """A small host of its own, for a test that spends it; with its stream."""
    hv = small_host(tmp_path_factory.mktemp("spare") / "h", sim_images["4.18"])
    try:
        yield hv, save(hv)[0]
    finally:
        power_off(hv)

