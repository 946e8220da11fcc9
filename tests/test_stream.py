"""The stream format and xen#2's validation of it: what a well-formed
stream says, and every way a bad one is refused before anything changes."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperv_sim.liveupdate import records as R
from hyperv_sim.liveupdate.dump import dump
from hyperv_sim.liveupdate.restore import check, decode
from hyperv_sim.liveupdate.save import build_stream, needed_record_types
from hyperv_sim.liveupdate.stream import RECORD_HEADER, StreamError, StreamWriter, iter_sections
from kexec_lu import lustream as ls
from kexec_lu.units import GiB, MiB

from conftest import make_hypervisor

KNOWN = set(ls.ALL_RECORD_TYPES)


class FakeStream:
    """Where the stream's own pages are, as MappedStream would say."""

    def __init__(self, extents=()):
        self._extents = list(extents)

    def extents(self):
        return self._extents


@pytest.fixture(scope="module")
def saved(tmp_path_factory, sim_images):
    hv = make_hypervisor(tmp_path_factory.mktemp("s") / "h", sim_images["4.18"], memory=4 * GiB,
                         cmdline="liveupdate=64M dom0_mem=512M")
    hv.create_domain("pv", "pv", 128 * MiB, 2)
    hv.create_domain("pvh", "pvh", 128 * MiB, 1, evtchn_abi="fifo", grant_version=2)
    hv.create_domain("hvm", "hvm", 128 * MiB, 2, pci=["0000:03:00.0"])
    hv.create_domain("tiny", "pvh", 16 * MiB, 1)
    with hv.sched.stopped():
        data, types = build_stream(hv, [("save", 1, 2)], set(), update_id=7)
    yield hv, data, types
    hv.close()


def accept(hv, data):
    system, plans = decode(data, KNOWN)
    lu = (hv.lu_start // 4096, hv.lu_size // 4096)
    xen = (hv.xen_start // 4096, -(-(hv.xen_start + hv.xen_size) // 4096) - hv.xen_start // 4096)
    return check(hv, system, plans, FakeStream(), lu, xen)


def refuse(hv, data, *words):
    with pytest.raises(StreamError) as e:
        accept(hv, data)
    for w in words:
        assert w in str(e.value), str(e.value)
    return str(e.value)


def records(data):
    """[(offset, type, body)] over the whole stream."""
    return [r for _, recs in iter_sections(data) for r in recs]


def replace_body(data, rtype, new_body, nth=0):
    """The stream with the nth record of rtype given a new body of the same length."""
    offs = [(off, body) for off, t, body in records(data) if t & ~ls.REC_OPTIONAL == rtype]
    off, body = offs[nth]
    assert len(new_body) == len(body)
    return data[:off + 8] + new_body + data[off + 8 + len(body):]


def test_a_saved_stream_is_framed_like_migration_v3(saved):
    hv, data, types = saved
    marker, ident, version, options = struct.unpack_from(">QIIH", data)
    assert (marker, ident, version, options) == (2**64 - 1, 0x58454E46, 3, 0)
    sections = list(iter_sections(data))
    assert sections[0][0] is None and sections[0][1][0][1] == ls.REC_LU_VERSION
    assert [h[0] for h, _ in sections[1:]] == [1, 1, 2, 2, 2]      # dom0 PV, pv, pvh, hvm, tiny
    assert all(recs[-1][1] == ls.REC_END for _, recs in sections)
    # No page contents: the stream is a few KiB for 896 MiB of guests.
    assert len(data) < 32 * 1024
    assert types - {ls.REC_END} == set(needed_record_types(hv)) | {ls.REC_LU_TIMINGS}
    assert accept(hv, data)["update_id"] == 7


def test_dump_names_every_record(saved):
    _, data, _ = saved
    rows = dump(data)
    whats = [r["what"] for r in rows]
    assert whats.count("LU_DOMAIN") == 5 and whats.count("domain header") == 5
    assert "LU_TIMINGS|OPTIONAL" in whats and "LU_IOMMU" in whats and "LU_EVTCHN_FIFO" in whats
    dom = [r for r in rows if r["what"] == "LU_DOMAIN"][3]
    assert dom["summary"].startswith("d3 hvm hvm, 2 vCPUs")


def test_unknown_optional_records_are_skipped_and_mandatory_ones_refused(saved):
    hv, data, _ = saved
    end_of_system = [off for off, t, _ in records(data) if t == ls.REC_END][0]
    extra = RECORD_HEADER.pack(0xC0000099, 8) + b"12345678"
    optional = data[:end_of_system] + extra + data[end_of_system:]
    assert accept(hv, optional)
    mandatory = data[:end_of_system] + RECORD_HEADER.pack(0x40000099, 8) + b"12345678" + data[end_of_system:]
    refuse(hv, mandatory, "UNKNOWN_0x40000099", "offset 0x%x" % end_of_system, "cannot restore")


def test_an_image_that_does_not_know_a_record_refuses_the_stream(saved):
    hv, data, _ = saved
    with pytest.raises(StreamError, match="LU_EVTCHN_FIFO"):
        decode(data, KNOWN - {ls.REC_LU_EVTCHN_FIFO})


def test_truncation_is_refused_at_every_length(saved):
    hv, data, _ = saved
    for cut in list(range(0, 64)) + list(range(64, len(data), 97)):
        with pytest.raises(StreamError):
            accept(hv, data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_single_byte_corruption_never_gets_through_unnoticed(saved, data):
    """A flipped byte is refused, or lands where the stream is still
    consistent (a register, a step count): never an exception of another
    kind, never a half-applied state (check() changes nothing)."""
    hv, stream, _ = saved
    pos = data.draw(st.integers(0, len(stream) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(stream)
    bad[pos] ^= flip
    try:
        accept(hv, bytes(bad))
    except StreamError:
        pass


def _domain_body(data, n):
    return [b for off, t, b in records(data) if t == ls.REC_LU_DOMAIN][n]


def test_duplicate_domid(saved):
    hv, data, _ = saved
    body = bytearray(_domain_body(data, 2))
    struct.pack_into("<H", body, 0, 1)            # pvh claims to be d1 too
    refuse(hv, replace_body(data, ls.REC_LU_DOMAIN, bytes(body), nth=2), "domid 1 is a duplicate",
           "LU_DOMAIN at offset")


def _move_first_extent(data, nth, mfn):
    """Domain nth's first P2M extent and its ownership moved to mfn."""
    head, items = R.P2M_EXTENTS[1]([b for o, t, b in records(data) if t == ls.REC_LU_P2M_EXTENTS][nth])
    own_head, own = R.OWNERSHIP[1]([b for o, t, b in records(data) if t == ls.REC_LU_PAGE_OWNERSHIP][nth])
    g, m, n = items[0]
    first = [i for i, o in enumerate(own) if o[0] == m][0]
    own[first] = (mfn,) + own[first][1:]
    data = replace_body(data, ls.REC_LU_P2M_EXTENTS, R.P2M_EXTENTS[0](head, [(g, mfn, n)] + items[1:]), nth=nth)
    return replace_body(data, ls.REC_LU_PAGE_OWNERSHIP, R.OWNERSHIP[0](own_head, own), nth=nth)


def test_a_frame_owned_twice(saved):
    hv, data, _ = saved
    d1_first = R.P2M_EXTENTS[1]([b for o, t, b in records(data) if t == ls.REC_LU_P2M_EXTENTS][1])[1][0][1]
    refuse(hv, _move_first_extent(data, 2, d1_first), "claimed twice", "d1 memory", "d2 memory")


def test_a_frame_inside_lu_bootmem(saved):
    hv, data, _ = saved
    refuse(hv, _move_first_extent(data, 4, hv.lu_start // 4096 + 100), "claimed twice", "d4 memory",
           "LU bootmem")


def test_mfn_out_of_range(saved):
    hv, data, _ = saved
    head, items = R.P2M_EXTENTS[1]([b for o, t, b in records(data) if t == ls.REC_LU_P2M_EXTENTS][1])
    g, m, n = items[0]
    bad = replace_body(data, ls.REC_LU_P2M_EXTENTS, R.P2M_EXTENTS[0](head, [(g, 1 << 40, n)] + items[1:]), nth=1)
    refuse(hv, bad, "does not own", "LU_P2M_EXTENTS at offset")


def test_a_dependency_on_a_domain_that_is_not_there(saved):
    hv, data, _ = saved
    head, pairs = R.IOREQ_SERVER[1]([b for o, t, b in records(data) if t == ls.REC_LU_IOREQ_SERVER][0])
    head = (head[0], head[1], 42) + head[3:]
    refuse(hv, replace_body(data, ls.REC_LU_IOREQ_SERVER, R.IOREQ_SERVER[0](head, pairs)),
           "device model runs in d42, which is not in the stream")


def test_a_port_that_does_not_point_back(saved):
    hv, data, _ = saved
    head, ports = R.EVTCHN_PORTS[1]([b for o, t, b in records(data) if t == ls.REC_LU_EVTCHN_PORTS][1])
    fixed = []
    for p in ports:
        if p[1] == R.PORT_KINDS["interdomain"]:
            p = p[:5] + (p[5] + 1000,) + p[6:]
        fixed.append(p)
    refuse(hv, replace_body(data, ls.REC_LU_EVTCHN_PORTS, R.EVTCHN_PORTS[0](head, fixed), nth=1),
           "does not exist or does not point back")


def _pv_types(data, nth=0):
    return R.PV_PAGE_TYPES[1]([b for o, t, b in records(data) if t == ls.REC_LU_PV_PAGE_TYPES][nth])


def test_pv_page_types_of_frames_the_domain_does_not_own_or_unknown_types(saved):
    hv, data, _ = saved
    head, items = _pv_types(data, 1)                      # d1, the PV guest
    d0_frame = R.P2M_EXTENTS[1]([b for o, t, b in records(data) if t == ls.REC_LU_P2M_EXTENTS][0])[1][0][1]
    for i, bad in ((len(items) // 2, (d0_frame,) + items[len(items) // 2][1:]),
                   (0, (items[0][0], 9, items[0][2])),
                   (len(items) - 1, (items[-1][0], 0, items[-1][2]))):
        changed = items[:i] + [bad] + items[i + 1:]
        refuse(hv, replace_body(data, ls.REC_LU_PV_PAGE_TYPES, R.PV_PAGE_TYPES[0](head, changed), nth=1),
               "LU_PV_PAGE_TYPES at offset", "d1 frame 0x%x type %d" % bad[:2])


def test_pv_page_tables_need_exactly_one_pinned_l4(saved):
    hv, data, _ = saved
    head, items = _pv_types(data, 1)
    unpinned = [(m, t, 0) for m, t, f in items]
    refuse(hv, replace_body(data, ls.REC_LU_PV_PAGE_TYPES, R.PV_PAGE_TYPES[0](head, unpinned), nth=1),
           "d1 needs exactly one pinned L4, has 0")
    l1 = next(i for i, (m, t, f) in enumerate(items) if t == 1)
    two = items[:l1] + [(items[l1][0], 4, R.PT_PINNED)] + items[l1 + 1:]
    refuse(hv, replace_body(data, ls.REC_LU_PV_PAGE_TYPES, R.PV_PAGE_TYPES[0](head, two), nth=1),
           "d1 needs exactly one pinned L4, has 2")


def test_record_length_past_the_end(saved):
    hv, data, _ = saved
    off = records(data)[3][0]
    bad = data[:off + 4] + struct.pack("<I", 1 << 20) + data[off + 8:]
    refuse(hv, bad, "runs past the end", "offset 0x%x" % off)


def test_a_stream_without_dom0_or_with_the_wrong_count(saved):
    hv, data, _ = saved
    v = bytearray([b for o, t, b in records(data) if t == ls.REC_LU_VERSION][0])
    struct.pack_into("<I", v, 12, 3)
    refuse(hv, replace_body(data, ls.REC_LU_VERSION, bytes(v)), "says 3 domains")


def test_vcpu_records_keep_registers_in_the_c_cores_order():
    """xen#2 assigns a record's registers to struct lu_regs in one go."""
    from hyperv_sim._lu_core import ffi
    assert [name for name, _ in ffi.typeof("struct lu_regs").fields] == list(R.REG_NAMES)


def test_writer_pads_bodies_and_ends_sections():
    w = StreamWriter()
    w.record(ls.REC_LU_VERSION, b"abc")
    w.end()
    out = w.getvalue()
    assert out[24:32] == RECORD_HEADER.pack(ls.REC_LU_VERSION, 3)
    assert out[32:40] == b"abc" + bytes(5)
    assert out[40:48] == RECORD_HEADER.pack(ls.REC_END, 0)
