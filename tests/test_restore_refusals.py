"""Every refusal xen#2's restore can make (hyperv_sim/liveupdate/: mapped.py, check.py, apply.py),
each made to happen by a stream, breadcrumb, MFN array or guest page
crafted for it, with the exact message it must give; and a test, generated
from the source of xen#2's refusing modules, that fails when a refusal has no test.

Refusals of check() and of mapping the stream must change nothing: the
helpers in streamkit compare every byte of host RAM and the hypervisor's
own state before and after.  Refusals in the restore passes come after the
frame table is rebuilt; they must leave every other byte of RAM as it was."""
import ast
import contextlib
import importlib
import inspect
import pathlib
import re
import struct

import pytest

from hyperv_sim.builder import backend_slot_addr
from hyperv_sim.frametable import FrameTable
from hyperv_sim.guest import BACKEND_SLOT, P2M
from xen_public import lurecords as R
from hyperv_sim.liveupdate.stream import RestoreFailure
from hyperv_sim._lu_core import lib
from hyperv_sim._lu_hw import lib as lib_hw
from xen_public import lustream as ls

import streamkit as K
from streamkit import assemble, at, crumb, handed_over, mfns_of, offset, refuse, refuse_map, replace, \
    replace_body, saved, sections, set_array, spare_host, value  # noqa: F401 (saved: the fixture)

PAGE = 4096
V = ls.REC_LU_VERSION


def where(data, rtype, nth=0):
    return "record %s at offset 0x%x" % (ls.record_name(rtype), offset(data, rtype, nth))


def section_at(data, domid):
    """Offset of domain domid's section (its header): the saved stream has d0 to d4 in order."""
    return offset(data, ls.REC_LU_DOMAIN, domid) - 16


def domain(data, domid):
    return list(value(data, R.DOMAIN, ls.REC_LU_DOMAIN, domid))


def ports(data, domid):
    return value(data, R.EVTCHN_PORTS, ls.REC_LU_EVTCHN_PORTS, domid)


def drop(data, rtype, nth=0):
    """The stream without the nth record of rtype."""
    secs = sections(data)
    found = [(recs, r) for _, recs in secs for r in recs if r[0] & ~ls.REC_OPTIONAL == rtype][nth]
    found[0].remove(found[1])
    return assemble(secs)


def tiny_memory(data, p2m, own_ram):
    """d4 (tiny, PVH, one extent) with this P2M and RAM ownership."""
    head, own = value(data, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, 4)
    own = [o for o in own if o[2] != R.OWN_RAM] + [(m, n, R.OWN_RAM, 0) for m, n in own_ram]
    data = replace(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, ((len(p2m), 0), p2m), nth=4)
    return replace(data, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, ((len(own), 0), own), nth=4)


def tiny_extent(data):
    (_, extents) = value(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, 4)
    (extent,) = extents
    return extent


# ---------------------------------------------------------------- mapping the stream from RAM

def test_a_handed_over_stream_maps_back(saved):
    """The control for the refusals below: untouched, it maps."""
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        with hv.sched.stopped():
            m = K.map_stream(hv)
        assert m.buf == data and m.mfns == mfns_of(pages)


def test_no_breadcrumb_nothing_to_restore(saved):
    hv, data, _ = saved
    refuse_map(hv, "no live-update breadcrumb at 0x%x: nothing to restore" % hv.lu_start)


def test_a_breadcrumb_whose_size_and_length_disagree(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        crumb(hv, 3, pages.nr * PAGE + 1)         # one byte past its last page
        refuse_map(hv, "breadcrumb: %d stream pages for %d bytes is not a stream" % (pages.nr, pages.nr * PAGE + 1))
        crumb(hv, 3, len(data))
        crumb(hv, 2, 0)                           # no pages at all
        refuse_map(hv, "breadcrumb: 0 stream pages for %d bytes is not a stream" % len(data))


def test_an_mfn_array_not_page_aligned_or_outside_ram(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        crumb(hv, 1, pages.array_maddr + 8)
        refuse_map(hv, "breadcrumb: MFN array at 0x%x is not page-aligned" % (pages.array_maddr + 8))
        crumb(hv, 1, hv.ram.size)
        refuse_map(hv, "breadcrumb: MFN array at 0x%x is not inside RAM" % hv.ram.size)


def test_an_mfn_array_in_bootmem_or_the_image(saved):
    hv, data, _ = saved
    with handed_over(hv, data):
        inside = hv.lu_start + 10 * PAGE
        crumb(hv, 1, inside)
        refuse_map(hv, "the MFN array (frame 0x%x) lies in LU bootmem" % (inside // PAGE))
        crumb(hv, 1, hv.xen_start)
        refuse_map(hv, "the MFN array (frame 0x%x) lies in the hypervisor image" % (hv.xen_start // PAGE))


def test_an_mfn_array_that_does_not_match_its_hash(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        hv.ram.write(pages.array_maddr, struct.pack("<Q", pages.mfns[0] ^ 1))
        refuse_map(hv, "the MFN array at 0x%x does not match its breadcrumb hash" % pages.array_maddr)


def test_an_mfn_array_naming_a_frame_twice(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        mfns = mfns_of(pages)
        set_array(hv, pages, [mfns[0]] + mfns[:-1])
        refuse_map(hv, "the MFN array names a frame twice")


def test_a_stream_page_past_the_end_of_ram(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        mfns = mfns_of(pages)
        mfns[1] = hv.ram.nr_frames + 5
        set_array(hv, pages, mfns)
        refuse_map(hv, "MFN array entry 1: frame 0x%x is past the end of RAM" % (hv.ram.nr_frames + 5))


def test_a_stream_page_in_bootmem_the_image_or_the_mfn_array(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        mfns = mfns_of(pages)
        for i, mfn, what in ((2, hv.lu_start // PAGE + 3, "LU bootmem"),
                             (1, hv.xen_start // PAGE + 1, "the hypervisor image")):
            set_array(hv, pages, mfns[:i] + [mfn] + mfns[i + 1:])
            refuse_map(hv, "stream page %d (frame 0x%x) lies in %s" % (i, mfn, what))
        array = pages.array_maddr // PAGE
        set_array(hv, pages, [array] + mfns[1:])
        refuse_map(hv, "stream page 0 (0x%x) lies in the MFN array" % array)


def test_a_stream_corrupted_in_memory(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        at_ = pages.mfns[pages.nr - 1] * PAGE + 17
        byte = hv.ram.read(at_, 1)[0]
        hv.ram.write(at_, bytes([byte ^ 0x40]))
        refuse_map(hv, "the stream does not match its breadcrumb hash (corrupted in memory)")
        # What it found goes with the refusal, for `hyperv-sim stream dump`.
        with pytest.raises(RestoreFailure) as e, hv.sched.stopped():
            K.map_stream(hv)
        bad = bytearray(data)
        bad[(pages.nr - 1) * PAGE + 17] ^= 0x40
        assert e.value.buf == bytes(bad)


# ---------------------------------------------------------------- decoding

def test_a_record_in_the_wrong_section(saved):
    hv, data, _ = saved
    # d0's grant maps retyped LU_XEN_REGIONS: same size, decodes, and was silently dropped.
    off = offset(data, ls.REC_LU_GRANT_MAPS)
    bad = bytearray(data)
    struct.pack_into("<I", bad, off, ls.REC_LU_XEN_REGIONS)
    refuse(hv, bytes(bad), "record LU_XEN_REGIONS at offset 0x%x does not belong in a domain section" % off)
    secs = sections(data)
    secs[0][1].insert(1, [ls.REC_LU_DOMAIN, at(data, ls.REC_LU_DOMAIN, 1)[1]])
    bad = assemble(secs)
    refuse(hv, bad, "record LU_DOMAIN at offset 0x%x does not belong in the system section"
           % offset(bad, ls.REC_LU_DOMAIN))


def test_bodies_whose_size_their_layout_does_not_give(saved):
    hv, data, _ = saved
    body = at(data, ls.REC_LU_DOMAIN, 1)[1]
    bad = replace_body(data, ls.REC_LU_DOMAIN, body[:-1], nth=1)
    refuse(hv, bad, "%s: body is 87 bytes, expected 88" % where(bad, ls.REC_LU_DOMAIN, 1))
    bad = replace_body(data, ls.REC_LU_P2M_EXTENTS, b"\1\0\0\0", nth=1)
    refuse(hv, bad, "%s: body of 4 bytes is shorter than its 8-byte header" % where(bad, ls.REC_LU_P2M_EXTENTS, 1))
    body = at(data, ls.REC_LU_P2M_EXTENTS, 1)[1]
    bad = replace_body(data, ls.REC_LU_P2M_EXTENTS, struct.pack("<I", 2) + body[4:], nth=1)
    refuse(hv, bad, "%s: says 2 entries of 24 bytes but holds 24 bytes" % where(bad, ls.REC_LU_P2M_EXTENTS, 1))
    body = at(data, ls.REC_LU_IOMMU)[1]
    bad = replace_body(data, ls.REC_LU_IOMMU, body + bytes(8))
    refuse(hv, bad, "%s: IOMMU body of %d bytes, its counts need %d"
           % (where(bad, ls.REC_LU_IOMMU), len(body) + 8, len(body)))


def test_a_record_a_domain_has_at_most_once_twice(saved):
    hv, data, _ = saved
    secs = sections(data)
    pv_info = [r for r in secs[2][1] if r[0] == ls.REC_X86_PV_INFO][0]
    secs[2][1].insert(2, list(pv_info))
    bad = assemble(secs)
    refuse(hv, bad, "%s: a domain has it more than once" % where(bad, ls.REC_X86_PV_INFO, 2))


def test_a_record_a_domain_needs_missing(saved):
    hv, data, _ = saved
    bad = drop(data, ls.REC_X86_PV_INFO, 1)
    refuse(hv, bad, "domain section at offset 0x%x has no X86_PV_INFO record" % section_at(bad, 1))
    # Grant table v2 needs its status frames.
    bad = drop(data, ls.REC_LU_GRANT_STATUS)
    refuse(hv, bad, "domain section at offset 0x%x has no LU_GRANT_STATUS record" % section_at(bad, 2))


# ---------------------------------------------------------------- the system section

def test_the_system_section_needs_each_record_once(saved):
    hv, data, _ = saved
    refuse(hv, drop(data, ls.REC_LU_M2P), "the system section at offset 0x18 has no LU_M2P record")
    secs = sections(data)
    secs[0][1].insert(2, [ls.REC_LU_XEN_REGIONS, at(data, ls.REC_LU_XEN_REGIONS)[1]])
    bad = assemble(secs)
    refuse(hv, bad, "%s: the system section has it more than once" % where(bad, ls.REC_LU_XEN_REGIONS, 1))


def test_a_stream_format_this_hypervisor_does_not_restore(saved):
    hv, data, _ = saved
    major, minor, fmt, n, extra = value(data, R.VERSION, V)
    lo, hi = hv.personality.lu_versions
    bad = replace(data, R.VERSION, V, (major, minor, hi + 1, n, extra))
    refuse(hv, bad, "record LU_VERSION at offset 0x18: stream format %d, this hypervisor restores %d-%d"
           % (hi + 1, lo, hi))


def test_a_format_1_stream_is_refused_by_its_length(saved):
    """Format 1's LU_VERSION had no extra version: 16 bytes, not 32."""
    hv, data, _ = saved
    secs = sections(data)
    secs[0][1][0] = [V, struct.pack("<IIII", 4, 18, 1, len(secs) - 1)]
    bad = assemble(secs)
    refuse(hv, bad, "record LU_VERSION at offset 0x18: body is 16 bytes, expected 32")


def _regions(data, regions, keep_iommu=True):
    """LU_XEN_REGIONS with these regions, and the IOMMU's as they were
    (the running IOMMU must still be what the stream says)."""
    if keep_iommu:
        _, old = value(data, R.XEN_REGIONS, ls.REC_LU_XEN_REGIONS)
        regions = list(regions) + [r for r in old if r[2] == R.REGION_IOMMU]
    return replace(data, R.XEN_REGIONS, ls.REC_LU_XEN_REGIONS, ((len(regions), 0), regions))


def _frame_table_and_crash(data):
    """The two regions xen#1 writes: its frame table and the crash region."""
    _, regions = value(data, R.XEN_REGIONS, ls.REC_LU_XEN_REGIONS)
    (ft,) = [r for r in regions if r[2] == R.REGION_FRAMETABLE]
    (crash,) = [r for r in regions if r[2] == R.REGION_CRASH]
    return ft, crash


@contextlib.contextmanager
def _register(regs, field, value):
    """The chipset's register set to value for a while (the hardware
    changed under the stream), then as it was."""
    saved = getattr(regs, field)
    setattr(regs, field, value)
    try:
        yield
    finally:
        setattr(regs, field, saved)


def test_an_iommu_the_stream_does_not_describe(saved):
    """xen#2 takes the IOMMU over as it runs, so it must be what the stream
    says: its tables among the frames the stream names, each device through
    its domain's tables.  The hardware is changed here, not the stream."""
    hv, data, _ = saved
    w = where(data, ls.REC_LU_XEN_REGIONS)
    ft, crash = _frame_table_and_crash(data)
    regs = hv.chipset.regs
    refuse(hv, _regions(data, [ft, crash], keep_iommu=False),
           w + ": the IOMMU is on, but the stream names none of its tables")
    root = regs.rtaddr_active
    for field, setting, problem in [
            ("rtaddr_active", ft[0] * PAGE,
             "the IOMMU's root table at 0x%x is not among the stream's IOMMU frames" % (ft[0] * PAGE)),
            ("iqa", ft[0] * PAGE,
             "the IOMMU's invalidation queue at 0x%x is not among the stream's IOMMU frames" % (ft[0] * PAGE)),
            ("gsts", regs.gsts & ~lib_hw.LU_VTD_TE, "the stream names IOMMU tables, but the IOMMU is off")]:
        with _register(regs, field, setting):
            refuse(hv, data, w + ": " + problem)
    # Bus 3's root entry pointing at a frame of the frame table.
    entry = root + 3 * 16
    saved_entry = hv.ram.read(entry, 16)
    hv.ram.write(entry, struct.pack("<QQ", ft[0] * PAGE | 1, 0))
    try:
        refuse(hv, data, w + ": bus 03's context table at 0x%x is not among the stream's IOMMU frames"
               % (ft[0] * PAGE))
    finally:
        hv.ram.write(entry, saved_entry)
    # The stream says the device is another one, which the IOMMU does not translate.
    hvm = hv.find_domain("hvm")
    moved = data.replace(b"0000:03:00.0", b"0000:03:00.1")
    refuse(hv, moved, w + ": device 0000:03:00.1 of d%d: the IOMMU translates it through nothing, the "
           "stream says through d%d's tables at 0x%x" % (hvm.domid, hvm.domid, hvm.iommu_root * PAGE))


def test_exactly_one_frame_table_region(saved):
    hv, data, _ = saved
    ft, crash = _frame_table_and_crash(data)
    w = where(data, ls.REC_LU_XEN_REGIONS)
    refuse(hv, _regions(data, [ft[:2] + (R.REGION_CRASH, 0)]), w + ": 0 frame-table regions, needs 1")
    bad = _regions(data, [ft, crash, (ft[0] - 4096, 4096, R.REGION_FRAMETABLE, 0)])
    refuse(hv, bad, w + ": 2 frame-table regions, needs 1")


def test_a_region_outside_ram(saved):
    hv, data, _ = saved
    ft, crash = _frame_table_and_crash(data)
    w = where(data, ls.REC_LU_XEN_REGIONS)
    nr = hv.ram.nr_frames
    refuse(hv, _regions(data, [ft, (nr - 2, 4, R.REGION_CRASH, 0)]),
           w + ": frames 0x%x+4 are not inside RAM" % (nr - 2))
    refuse(hv, _regions(data, [ft, crash, (0x1000, 0, 7, 0)]), w + ": frames 0x1000+0 are not inside RAM")


def test_a_frame_table_region_too_small(saved):
    hv, data, _ = saved
    ft, crash = _frame_table_and_crash(data)
    assert ft[1] * PAGE == FrameTable.bytes_for(hv.ram.nr_frames)
    refuse(hv, _regions(data, [(ft[0], ft[1] - 1) + ft[2:], crash]),
           "%s: the frame-table region is too small for %d frames"
           % (where(data, ls.REC_LU_XEN_REGIONS), hv.ram.nr_frames))


# ---------------------------------------------------------------- the crash image

KI = ls.REC_LU_KEXEC_IMAGE


def _kexec_image(data, head=None, segments=None):
    """The stream with LU_KEXEC_IMAGE's head fields and segments changed
    (head: {field: value}; segments: the new list)."""
    (nr, ktype, res, arch, entry, digest), segs = value(data, R.KEXEC_IMAGE, KI)
    fields = dict(ktype=ktype, arch=arch, entry=entry)
    fields.update(head or {})
    segs = segs if segments is None else segments
    return replace(data, R.KEXEC_IMAGE, KI, ((len(segs), fields["ktype"], res, fields["arch"],
                                             fields["entry"], digest), segs))


def test_a_crash_image_given_twice(saved):
    hv, data, _ = saved
    secs = sections(data)
    secs[0][1].insert(3, [KI, at(data, KI)[1]])
    bad = assemble(secs)
    refuse(hv, bad, "%s: the system section has it more than once" % where(bad, KI, 1))


def test_a_carried_image_that_is_not_a_crash_image(saved):
    hv, data, _ = saved
    for ktype in (0, 2, 7):       # default, live update, no such type
        refuse(hv, _kexec_image(data, {"ktype": ktype}),
               "%s: image type %d, only a crash image (1) is carried" % (where(data, KI), ktype))


def test_a_crash_image_of_another_architecture_or_segment_count(saved):
    hv, data, _ = saved
    (_, _, _, _, entry, _), segs = value(data, R.KEXEC_IMAGE, KI)
    refuse(hv, _kexec_image(data, {"arch": 40}), "%s: architecture 40 with 2 segments" % where(data, KI))
    refuse(hv, _kexec_image(data, segments=[]), "%s: architecture 62 with 0 segments" % where(data, KI))
    # KEXEC_SEGMENT_MAX (16) is the most; 17 refused before any segment is read.
    refuse(hv, _kexec_image(data, segments=segs * 8 + segs[:1]),
           "%s: architecture 62 with 17 segments" % where(data, KI))


def test_a_crash_image_without_a_crash_region(saved):
    hv, data, _ = saved
    ft, crash = _frame_table_and_crash(data)
    bad = _regions(data, [ft])
    refuse(hv, bad, "%s: LU_XEN_REGIONS has 0 crash regions, needs 1" % where(bad, KI))
    bad = _regions(data, [ft, crash, (crash[0] + crash[1], 16, R.REGION_CRASH, 0)])
    refuse(hv, bad, "%s: LU_XEN_REGIONS has 2 crash regions, needs 1" % where(bad, KI))


def test_a_crash_image_segment_with_unknown_flags(saved):
    hv, data, _ = saved
    _, segs = value(data, R.KEXEC_IMAGE, KI)
    refuse(hv, _kexec_image(data, segments=[segs[0][:3] + (2, 0)] + segs[1:]),
           "%s: unknown segment flags" % where(data, KI))


def test_crash_image_segments_xen_would_not_load(saved):
    """Xen's load checks, against the crash region the stream keeps."""
    hv, data, _ = saved
    (_, _, _, _, entry, _), ((dest, size, buf, flags, _), low) = value(data, R.KEXEC_IMAGE, KI)
    _, (start, n, _, _) = _frame_table_and_crash(data)
    lo, hi = start * PAGE, (start + n) * PAGE
    w = where(data, KI)
    cases = {
        "segment 0: destination 0x%x+0x%x is not page-aligned" % (dest + 8, size): [(dest + 8, size, buf, 0, 0), low],
        "segment 0: %d bytes do not fit in its %d-byte destination" % (size + 1, size):
            [(dest, size, size + 1, 0, 0), low],
        "segment 0: [0x%x, 0x%x) outside the allowed range [0x%x, 0x%x)" % (lo - PAGE, lo - PAGE + size, lo, hi):
            [(lo - PAGE, size, buf, 0, 0), low],
        "segment 0: [0x%x, 0x%x) outside the allowed range [0x%x, 0x%x)" % (hi - PAGE, hi - PAGE + size, lo, hi):
            [(hi - PAGE, size, buf, 0, 0), low],
        "segments overlap at 0x%x" % (dest + PAGE): [(dest, size, buf, 0, 0), (dest + PAGE, PAGE, 0, 0, 0)],
    }
    for message, segs in cases.items():
        refuse(hv, _kexec_image(data, segments=segs), "%s: %s" % (w, message))
    refuse(hv, _kexec_image(data, {"entry": dest + size}), "%s: entry 0x%x lies in no segment" % (w, dest + size))
    # The region's last page is inside; mapped-only segments are not ranged.
    accept_at_end = _kexec_image(data, {"entry": hi - PAGE}, [(hi - PAGE, PAGE, 0, 0, 0), low])
    K.accept(hv, accept_at_end)


def test_an_m2p_of_the_wrong_size(saved):
    hv, data, _ = saved
    start, n = value(data, R.M2P, ls.REC_LU_M2P)
    refuse(hv, replace(data, R.M2P, ls.REC_LU_M2P, (start, n - 1)),
           "%s: %d entries for %d frames" % (where(data, ls.REC_LU_M2P), n - 1, hv.ram.nr_frames))


def test_a_reserved_domid(saved):
    hv, data, _ = saved
    d = domain(data, 4)
    d[0] = 0x7FF0                                     # DOMID_FIRST_RESERVED
    refuse(hv, replace(data, R.DOMAIN, ls.REC_LU_DOMAIN, d, nth=4),
           "%s: domid 32752 is reserved" % where(data, ls.REC_LU_DOMAIN, 4))


def test_a_domain_type_or_vcpu_count_out_of_range(saved):
    hv, data, _ = saved
    w = where(data, ls.REC_LU_DOMAIN, 4)
    for dtype, vcpus in ((1, 0), (1, 129), (7, 1)):
        d = domain(data, 4)
        d[2], d[3] = dtype, vcpus
        refuse(hv, replace(data, R.DOMAIN, ls.REC_LU_DOMAIN, d, nth=4),
               "%s: type %d with %d vCPUs" % (w, dtype, vcpus))


def test_a_domain_header_of_the_wrong_type(saved):
    hv, data, _ = saved
    d = domain(data, 1)
    d[2] = R.DTYPES["pvh"]                            # a PV domain's section, header type 1
    refuse(hv, replace(data, R.DOMAIN, ls.REC_LU_DOMAIN, d, nth=1),
           "%s: domain header type 1 does not match type pvh" % where(data, ls.REC_LU_DOMAIN, 1))


# ---------------------------------------------------------------- one domain's records

def test_an_unknown_ownership_kind(saved):
    hv, data, _ = saved
    head, own = value(data, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, 4)
    own[1] = own[1][:2] + (3, 0)
    refuse(hv, replace(data, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, (head, own), nth=4),
           "%s: d4 ownership kind 3" % where(data, ls.REC_LU_PAGE_OWNERSHIP, 4))


def test_a_gfn_mapped_twice(saved):
    hv, data, _ = saved
    head, p2m = value(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, 0)     # dom0: two extents or more
    (g0, m0, n0), (g1, m1, n1), *rest = p2m
    overlap = g0 + n0 // 2
    bad = replace(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS,
                  (head, [(g0, m0, n0), (overlap, m1, n1)] + rest), nth=0)
    refuse(hv, bad, "%s: d0 gfn 0x%x mapped twice" % (where(data, ls.REC_LU_P2M_EXTENTS, 0), overlap))


def test_a_frame_mapped_at_two_gfns(saved):
    """Two halves of d4's memory on the same frames: each inside what it
    owns and as many frames as it owns, yet half of them unmapped."""
    hv, data, _ = saved
    g, m, n = tiny_extent(data)
    bad = tiny_memory(data, [(0, m, n // 2), (n // 2, m, n // 2)], [(m, n)])
    refuse(hv, bad, "%s: d4 maps frame 0x%x at two gfns" % (where(bad, ls.REC_LU_P2M_EXTENTS, 4), m))


def test_memory_the_p2m_does_not_map(saved):
    hv, data, _ = saved
    g, m, n = tiny_extent(data)
    bad = tiny_memory(data, [(0, m, n - 1)], [(m, n)])
    refuse(hv, bad, "%s: d4 owns frames its P2M does not map" % where(bad, ls.REC_LU_P2M_EXTENTS, 4))


def test_a_p2m_without_the_guest_info_page(saved):
    hv, data, _ = saved
    g, m, n = tiny_extent(data)
    bad = tiny_memory(data, [(1, m, n)], [(m, n)])
    refuse(hv, bad, "%s: d4 does not map gfn 0x0, its guest info page" % where(bad, ls.REC_LU_P2M_EXTENTS, 4))


def test_shared_info_outside_the_shared_frames(saved):
    hv, data, _ = saved
    g, m, n = tiny_extent(data)
    d = domain(data, 4)
    d[5] = m + 1                                      # a frame of its memory, not a shared one
    refuse(hv, replace(data, R.DOMAIN, ls.REC_LU_DOMAIN, d, nth=4),
           "%s: d4 shared info 0x%x is not a page it shares" % (where(data, ls.REC_LU_DOMAIN, 4), m + 1))


def test_a_grant_table_version_or_size_out_of_range(saved):
    hv, data, _ = saved
    (nr, version), frames = value(data, R.GRANT_TABLE, ls.REC_LU_GRANT_TABLE, 4)
    w = where(data, ls.REC_LU_GRANT_TABLE, 4)
    refuse(hv, replace(data, R.GRANT_TABLE, ls.REC_LU_GRANT_TABLE, ((nr, 3), frames), nth=4),
           w + ": d4 grant table version 3 with %d frames" % nr)
    refuse(hv, replace(data, R.GRANT_TABLE, ls.REC_LU_GRANT_TABLE, ((0, version), []), nth=4),
           w + ": d4 grant table version %d with 0 frames" % version)


def test_a_grant_frame_outside_the_shared_frames(saved):
    hv, data, _ = saved
    g, m, n = tiny_extent(data)
    head, _ = value(data, R.GRANT_TABLE, ls.REC_LU_GRANT_TABLE, 4)
    refuse(hv, replace(data, R.GRANT_TABLE, ls.REC_LU_GRANT_TABLE, (head, [(m + 2,)]), nth=4),
           "%s: d4 grant frame 0x%x is not a page it shares" % (where(data, ls.REC_LU_GRANT_TABLE, 4), m + 2))
    # A v2 status frame is one too (d2 uses v2).
    head, _ = value(data, R.GRANT_STATUS, ls.REC_LU_GRANT_STATUS)
    refuse(hv, replace(data, R.GRANT_STATUS, ls.REC_LU_GRANT_STATUS, (head, [(m + 2,)])),
           "%s: d2 grant frame 0x%x is not a page it shares" % (where(data, ls.REC_LU_GRANT_STATUS), m + 2))


def test_vcpu_records_that_do_not_match_the_vcpus(saved):
    hv, data, _ = saved
    bad = drop(data, ls.REC_LU_VCPU_STATE, 3)         # d1's vCPU1
    refuse(hv, bad, "%s: d1 has 2 vCPUs but vCPU records [0]" % where(bad, ls.REC_LU_VCPU_STATE, 2))
    # With none at all there is no record to name: the section is named.
    bad = drop(data, ls.REC_LU_VCPU_STATE, 7)         # d4's only one
    refuse(hv, bad, "domain section at offset 0x%x: d4 has 1 vCPUs but vCPU records []" % section_at(bad, 4))


def _vcpu(data, nth, **fields):
    v = list(value(data, R.VCPU, ls.REC_LU_VCPU_STATE, nth))
    names = ("vcpu", "runstate", "paused", "reserved", "steps") + R.REG_NAMES + ("cr3",)
    for k, x in fields.items():
        v[names.index(k)] = x
    return replace(data, R.VCPU, ls.REC_LU_VCPU_STATE, v, nth=nth)


def test_a_vcpu_whose_cr3_is_not_the_pinned_l4(saved):
    hv, data, _ = saved
    l4 = value(data, R.VCPU, ls.REC_LU_VCPU_STATE, 2)[-1]
    # d1's vCPU1: named by its own record, not its domain's first.
    refuse(hv, _vcpu(data, 3, cr3=l4 + 1), "%s: d1 vCPU1 CR3 0x%x is not its pinned L4"
           % (where(data, ls.REC_LU_VCPU_STATE, 3), l4 + 1))


def test_an_unknown_run_state(saved):
    hv, data, _ = saved
    refuse(hv, _vcpu(data, 6, runstate=9), "%s: d3 vCPU1 run state 9" % where(data, ls.REC_LU_VCPU_STATE, 6))


def test_fifo_after_the_ports(saved):
    hv, data, _ = saved
    secs = sections(data)
    recs = secs[3][1]                                 # d2, FIFO event channels
    fifo = [r for r in recs if r[0] == ls.REC_LU_EVTCHN_FIFO][0]
    recs.remove(fifo)
    recs.insert(recs.index([r for r in recs if r[0] == ls.REC_LU_EVTCHN_PORTS][0]) + 1, fifo)
    bad = assemble(secs)
    refuse(hv, bad, "%s: the ABI must come before the ports" % where(bad, ls.REC_LU_EVTCHN_FIFO))


def test_a_fifo_page_not_populated(saved):
    hv, data, _ = saved
    array, control = value(data, R.EVTCHN_FIFO, ls.REC_LU_EVTCHN_FIFO)
    refuse(hv, replace(data, R.EVTCHN_FIFO, ls.REC_LU_EVTCHN_FIFO, (array, 0x100000)),
           "%s: d2 FIFO page gfn 0x100000 is not populated" % where(data, ls.REC_LU_EVTCHN_FIFO))


def test_an_iommu_root_outside_its_tables(saved):
    hv, data, _ = saved
    root, extents, devices = R.IOMMU.decode(at(data, ls.REC_LU_IOMMU)[1])
    (m, n), = extents
    refuse(hv, replace_body(data, ls.REC_LU_IOMMU, R.IOMMU.encode(m + n, extents, devices)),
           "%s: d3 IOMMU root 0x%x is not among its tables" % (where(data, ls.REC_LU_IOMMU), m + n))


def _params(data, rtype, items, nth):
    codec = R.HVM_PARAMS if rtype == ls.REC_HVM_PARAMS else R.LU_HVM_PARAMS
    return replace(data, codec, rtype, ((len(items), 0), items), nth=nth)


def test_hvm_parameters_of_a_pv_domain(saved):
    hv, data, _ = saved
    secs = sections(data)
    recs = secs[2][1]                                 # d1, PV
    recs.insert(len(recs) - 1, [ls.REC_HVM_PARAMS, R.HVM_PARAMS.encode((1, 0), [(1, 7)])])
    bad = assemble(secs)
    refuse(hv, bad, "%s: d1 is PV and has no HVM parameters" % where(bad, ls.REC_HVM_PARAMS))


def test_an_hvm_parameter_xen_does_not_have(saved):
    hv, data, _ = saved
    head, items = value(data, R.LU_HVM_PARAMS, ls.REC_LU_HVM_PARAMS, 1)       # d3, HVM
    refuse(hv, _params(data, ls.REC_LU_HVM_PARAMS, list(items) + [(39, 1)], 1),
           "%s: d3 HVM parameter 39 does not exist (Xen has 39)" % where(data, ls.REC_LU_HVM_PARAMS, 1))


def test_an_hvm_parameter_in_the_wrong_record(saved):
    hv, data, _ = saved
    # TIMER_MODE (10) is the toolstack's, STORE_PFN (1) migration's.
    head, items = value(data, R.HVM_PARAMS, ls.REC_HVM_PARAMS, 1)
    refuse(hv, _params(data, ls.REC_HVM_PARAMS, list(items) + [(10, 1)], 1),
           "%s: d3 HVM parameter 10 belongs in LU_HVM_PARAMS" % where(data, ls.REC_HVM_PARAMS, 1))
    head, items = value(data, R.LU_HVM_PARAMS, ls.REC_LU_HVM_PARAMS, 1)
    refuse(hv, _params(data, ls.REC_LU_HVM_PARAMS, list(items) + [(1, 5)], 1),
           "%s: d3 HVM parameter 1 belongs in HVM_PARAMS" % where(data, ls.REC_LU_HVM_PARAMS, 1))


def test_an_hvm_parameter_given_twice(saved):
    hv, data, _ = saved
    head, items = value(data, R.HVM_PARAMS, ls.REC_HVM_PARAMS, 1)
    refuse(hv, _params(data, ls.REC_HVM_PARAMS, list(items) + [items[0]], 1),
           "%s: d3 HVM parameter %d is given twice" % (where(data, ls.REC_HVM_PARAMS, 1), items[0][0]))


# ---------------------------------------------------------------- links between domains

def _ports(data, domid, change):
    head, items = ports(data, domid)
    return replace(data, R.EVTCHN_PORTS, ls.REC_LU_EVTCHN_PORTS, (head, [change(p) for p in items]), nth=domid)


def test_a_port_number_or_kind_out_of_range(saved):
    hv, data, _ = saved
    virq = R.PORT_KINDS["virq"]
    # Port 1 of every guest is its timer virq: nothing else points at it.
    assert ports(data, 4)[1][0][:2] == (1, virq) and ports(data, 2)[1][0][:2] == (1, virq)
    refuse(hv, _ports(data, 4, lambda p: p[:1] + (9,) + p[2:] if p[0] == 1 else p),
           "%s: d4 port 1 kind 9" % where(data, ls.REC_LU_EVTCHN_PORTS, 4))
    refuse(hv, _ports(data, 4, lambda p: (0,) + p[1:] if p[0] == 1 else p),
           "%s: d4 port 0 kind %d" % (where(data, ls.REC_LU_EVTCHN_PORTS, 4), virq))
    # Past what the page holding its bits has room for: shared info (2-level), the event array (FIFO).
    refuse(hv, _ports(data, 4, lambda p: (4096,) + p[1:] if p[0] == 1 else p),
           "%s: d4 port 4096 kind %d" % (where(data, ls.REC_LU_EVTCHN_PORTS, 4), virq))
    refuse(hv, _ports(data, 2, lambda p: (1024,) + p[1:] if p[0] == 1 else p),
           "%s: d2 port 1024 kind %d" % (where(data, ls.REC_LU_EVTCHN_PORTS, 2), virq))


def test_an_unbound_port_waiting_for_a_missing_domain(saved):
    hv, data, _ = saved
    unbound = R.PORT_KINDS["unbound"]
    first = next(p[0] for p in ports(data, 1)[1] if p[1] == unbound)
    refuse(hv, _ports(data, 1, lambda p: p[:4] + (42,) + p[5:] if p[1] == unbound else p),
           "%s: d1 port %d waits for d42, which is not in the stream" % (where(data, ls.REC_LU_EVTCHN_PORTS, 1), first))


def _ioreq(data, change):
    head, pairs = value(data, R.IOREQ_SERVER, ls.REC_LU_IOREQ_SERVER)
    head, pairs = change(list(head), list(pairs))
    return replace(data, R.IOREQ_SERVER, ls.REC_LU_IOREQ_SERVER, (tuple(head), pairs))


def test_an_ioreq_page_not_populated(saved):
    hv, data, _ = saved

    def far(head, pairs):
        head[3] = 0x100000
        return head, pairs
    refuse(hv, _ioreq(data, far), "%s: d3 ioreq page gfn 0x100000 is not populated"
           % where(data, ls.REC_LU_IOREQ_SERVER))


def test_ioreq_ports_for_every_vcpu(saved):
    hv, data, _ = saved

    def one(head, pairs):
        head[0] = 1
        return head, pairs[:1]
    refuse(hv, _ioreq(data, one), "%s: d3 has 2 vCPUs but 1 ioreq ports" % where(data, ls.REC_LU_IOREQ_SERVER))


def test_ioreq_ports_bound_to_the_device_model(saved):
    hv, data, _ = saved
    _, ((g0, dm0), (g1, dm1)) = value(data, R.IOREQ_SERVER, ls.REC_LU_IOREQ_SERVER)
    w = where(data, ls.REC_LU_IOREQ_SERVER)
    refuse(hv, _ioreq(data, lambda head, pairs: (head, [(99, dm0), (g1, dm1)])),
           w + ": d3 ioreq port 99 is not bound to d0 port %d" % dm0)
    # dom0's end of it wrong: a port the guest's is not bound to.
    refuse(hv, _ioreq(data, lambda head, pairs: (head, [(g0, dm1), (g1, dm1)])),
           w + ": d3 ioreq port %d is not bound to d0 port %d" % (g0, dm1))


def _grant_maps(data, change):
    head, maps = value(data, R.GRANT_MAPS, ls.REC_LU_GRANT_MAPS)
    return replace(data, R.GRANT_MAPS, ls.REC_LU_GRANT_MAPS, (head, [change(m) for m in maps]))


def test_a_grant_map_of_a_missing_domain(saved):
    hv, data, _ = saved
    refuse(hv, _grant_maps(data, lambda m: m[:1] + (42,) + m[2:]),
           "%s: d0 maps a grant of d42, which is not in the stream" % where(data, ls.REC_LU_GRANT_MAPS))


def test_a_grant_map_of_a_frame_the_granter_does_not_own(saved):
    hv, data, _ = saved
    _, maps = value(data, R.GRANT_MAPS, ls.REC_LU_GRANT_MAPS)
    handle, granter, _, ref, _, mfn = maps[0]
    _, m, _ = tiny_extent(data)                       # a frame of d4's, not of the granter's
    assert granter != 4
    refuse(hv, _grant_maps(data, lambda x: x[:5] + (m,) if x[0] == handle else x),
           "%s: d0 maps frame 0x%x as d%d ref %d, but d%d does not own it"
           % (where(data, ls.REC_LU_GRANT_MAPS), m, granter, ref, granter))


def test_a_foreign_map_of_a_page_not_mapped_there(saved):
    hv, data, _ = saved
    head, ((dom, _, _, gfn, mfn),) = value(data, R.FOREIGN_MAPS, ls.REC_LU_FOREIGN_MAPS)
    refuse(hv, replace(data, R.FOREIGN_MAPS, ls.REC_LU_FOREIGN_MAPS, (head, [(dom, 0, 0, gfn + 1, mfn)])),
           "%s: d0 maps gfn 0x%x of d%d at frame 0x%x, which d%d does not map there"
           % (where(data, ls.REC_LU_FOREIGN_MAPS), gfn + 1, dom, mfn, dom))
    refuse(hv, replace(data, R.FOREIGN_MAPS, ls.REC_LU_FOREIGN_MAPS, (head, [(42, 0, 0, gfn, mfn)])),
           "%s: d0 maps gfn 0x%x of d42 at frame 0x%x, which d42 does not map there"
           % (where(data, ls.REC_LU_FOREIGN_MAPS), gfn, mfn))


# ---------------------------------------------------------------- the restore passes

refuse_restore = K.refuse_restore


def test_page_tables_that_do_not_validate(tmp_path_factory, sim_images):
    """d1 without its last frame: stream and ownership agree, its page
    tables still map it, and the walk as the L4 is pinned finds it."""
    with spare_host(tmp_path_factory, sim_images) as (hv, data):
        dom = hv.domains[1]
        (g, m, n), = dom.p2m
        head, own = value(data, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, 1)
        own = [(m, n - 1, R.OWN_RAM, 0) if o[0] == m else o for o in own]
        bad = replace(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, ((1, 0), [(g, m, n - 1)]), nth=1)
        bad = replace(bad, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, (head, own), nth=1)
        last_l1 = P2M(dom.p2m).mfn(dom.layout.pt_gfns[-1])
        refuse_restore(hv, bad, "d1 page tables do not validate (error %d at mfn 0x%x entry %d)"
                       % (lib.LU_WALK_NOT_OWNED, last_l1, (n - 1) % 512))


def test_a_guest_without_its_info_page(tmp_path_factory, sim_images):
    """d4's gfns 0 and 1 swapped in its P2M: consistent, but gfn 0 is not
    the page the guest keeps its state in."""
    with spare_host(tmp_path_factory, sim_images) as (hv, data):
        (g, m, n), = hv.domains[4].p2m
        bad = replace(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS,
                      ((3, 0), [(0, m + 1, 1), (1, m, 1), (2, m + 2, n - 2)]), nth=4)
        # Read with the guests stopped (refuse_restore stops them too): the
        # running guest writes that page.
        hv.sched.shutdown()
        magic, = struct.unpack("<Q", hv.ram.read((m + 1) * PAGE, 8))
        refuse_restore(hv, bad, "d4: no guest info page at gfn 0 (magic 0x%x)" % magic)


def test_a_working_set_not_populated(tmp_path_factory, sim_images):
    with spare_host(tmp_path_factory, sim_images) as (hv, data):
        lay = hv.domains[4].layout
        (g, m, n), = hv.domains[4].p2m
        keep = lay.ws_base_gfn + 1                    # the working set's first page only
        assert lay.ws_pages > 1
        bad = tiny_memory(data, [(0, m, keep)], [(m, keep)])
        refuse_restore(hv, bad, "d4 vCPU0 working set: gfn 0x%x is not populated" % keep)


def test_dom0_without_a_backend_for_a_frontend(tmp_path_factory, sim_images):
    """dom0's own memory says its backend slot for d4 serves nobody."""
    with spare_host(tmp_path_factory, sim_images) as (hv, data):
        slot = backend_slot_addr(hv, hv.domains[4].frontend.backend_slot)
        fields = list(BACKEND_SLOT.unpack(hv.ram.read(slot, BACKEND_SLOT.size)))
        assert fields[1] == 4
        fields[1] = 0
        hv.ram.write(slot, BACKEND_SLOT.pack(*fields))
        refuse_restore(hv, data, "dom0 runs no backend for d4's frontend")


# ---------------------------------------------------------------- the helpers can fail

def test_the_state_snapshot_sees_a_changed_byte_or_attribute(saved):
    """refuse() would notice a check that wrote: a byte of RAM, or a
    rebound attribute, changes the snapshot."""
    hv, data, _ = saved
    with hv.sched.stopped():
        before = K.hv_state(hv)
        start = K.ram_image(hv.ram)[0][0]
        byte = hv.ram.read(start, 1)
        hv.ram.write(start, bytes([byte[0] ^ 1]))
        changed = K.hv_state(hv)
        hv.ram.write(start, byte)
        mappings = hv.mappings
        hv.mappings = type(mappings)(hv.frametable)
        rebound = K.hv_state(hv)
        hv.mappings = mappings
        assert K.hv_state(hv) == before
    assert changed["ram"] != before["ram"] and rebound["attributes"] != before["attributes"]


# ---------------------------------------------------------------- every refusal has a test

# Each refusal of xen#2's restore (mapped, check, apply), by its message format, and the test that makes it.
SITES = {
    # the crash image
    "record LU_KEXEC_IMAGE at offset 0x%x: the system section has it more than once": "test_a_crash_image_given_twice",
    "%s: image type %d, only a crash image (%d) is carried": "test_a_carried_image_that_is_not_a_crash_image",
    "%s: architecture %d with %d segments": "test_a_crash_image_of_another_architecture_or_segment_count",
    "%s: LU_XEN_REGIONS has %d crash regions, needs 1": "test_a_crash_image_without_a_crash_region",
    "%s: unknown segment flags": "test_a_crash_image_segment_with_unknown_flags",
    "%s: %s": "test_crash_image_segments_xen_would_not_load",
    # mapping the stream
    "no live-update breadcrumb at 0x%x: nothing to restore": "test_no_breadcrumb_nothing_to_restore",
    "breadcrumb: %d stream pages for %d bytes is not a stream": "test_a_breadcrumb_whose_size_and_length_disagree",
    "breadcrumb: MFN array at 0x%x is not page-aligned": "test_an_mfn_array_not_page_aligned_or_outside_ram",
    "breadcrumb: MFN array at 0x%x is not inside RAM": "test_an_mfn_array_not_page_aligned_or_outside_ram",
    "%s (frame 0x%x) lies in %s": "test_an_mfn_array_in_bootmem_or_the_image",
    "the MFN array at 0x%x does not match its breadcrumb hash": "test_an_mfn_array_that_does_not_match_its_hash",
    "the MFN array names a frame twice": "test_an_mfn_array_naming_a_frame_twice",
    "MFN array entry %d: frame 0x%x is past the end of RAM": "test_a_stream_page_past_the_end_of_ram",
    "stream page %d (0x%x) lies in the MFN array": "test_a_stream_page_in_bootmem_the_image_or_the_mfn_array",
    "the stream does not match its breadcrumb hash (corrupted in memory)": "test_a_stream_corrupted_in_memory",
    # decoding
    "record %s at offset 0x%x does not belong in %s": "test_a_record_in_the_wrong_section",
    "record %s at offset 0x%x: %s": "test_bodies_whose_size_their_layout_does_not_give",
    "record %s at offset 0x%x: a domain has it more than once": "test_a_record_a_domain_has_at_most_once_twice",
    "domain section at offset 0x%x has no %s record": "test_a_record_a_domain_needs_missing",
    # the system section and the domain list
    "the system section at offset 0x%x has no %s record": "test_the_system_section_needs_each_record_once",
    "record %s at offset 0x%x: the system section has it more than once":
        "test_the_system_section_needs_each_record_once",
    "record LU_VERSION at offset 0x%x: stream format %d, this hypervisor restores %d-%d":
        "test_a_stream_format_this_hypervisor_does_not_restore",
    "record LU_VERSION at offset 0x%x says %d domains, the stream has %d sections":
        "test_stream::test_a_stream_without_dom0_or_with_the_wrong_count",
    "record LU_XEN_REGIONS at offset 0x%x: %d frame-table regions, needs 1": "test_exactly_one_frame_table_region",
    "record LU_XEN_REGIONS at offset 0x%x: %s": "test_an_iommu_the_stream_does_not_describe",
    "%s: frames 0x%x+%d are not inside RAM": "test_a_region_outside_ram",
    "record LU_XEN_REGIONS at offset 0x%x: the frame-table region is too small for %d frames":
        "test_a_frame_table_region_too_small",
    "record LU_M2P at offset 0x%x: %d entries for %d frames": "test_an_m2p_of_the_wrong_size",
    "%s: domid %d is %s": "test_a_reserved_domid",
    "%s: type %d with %d vCPUs": "test_a_domain_type_or_vcpu_count_out_of_range",
    "%s: domain header type %d does not match type %s": "test_a_domain_header_of_the_wrong_type",
    "the stream has no control domain d0": "test_stream::test_a_stream_without_dom0_or_with_the_wrong_count",
    "record LU_DOMAIN at offset 0x%x: d0 is not the control domain":
        "test_stream::test_a_stream_without_dom0_or_with_the_wrong_count",
    "%s: frame 0x%x is claimed twice (%s, and %s in %s)": "test_stream::test_a_frame_owned_twice",
    # one domain
    "%s: d%d ownership kind %d": "test_an_unknown_ownership_kind",
    "%s: d%d gfn 0x%x mapped twice": "test_a_gfn_mapped_twice",
    "%s: d%d maps gfn 0x%x to frames 0x%x+%d it does not own": "test_stream::test_mfn_out_of_range",
    "%s: d%d maps frame 0x%x at two gfns": "test_a_frame_mapped_at_two_gfns",
    "%s: d%d owns frames its P2M does not map": "test_memory_the_p2m_does_not_map",
    "%s: d%d does not map gfn 0x%x, its guest info page": "test_a_p2m_without_the_guest_info_page",
    "%s: d%d shared info 0x%x is not a page it shares": "test_shared_info_outside_the_shared_frames",
    "%s: d%d grant table version %d with %d frames": "test_a_grant_table_version_or_size_out_of_range",
    "%s: d%d grant frame 0x%x is not a page it shares": "test_a_grant_frame_outside_the_shared_frames",
    "%s: d%d frame 0x%x type %d":
        "test_stream::test_pv_page_types_of_frames_the_domain_does_not_own_or_unknown_types",
    "%s: d%d needs exactly one pinned L4, has %d": "test_stream::test_pv_page_tables_need_exactly_one_pinned_l4",
    "%s: d%d has %d vCPUs but vCPU records %s": "test_vcpu_records_that_do_not_match_the_vcpus",
    "%s: d%d vCPU%d CR3 0x%x is not its pinned L4": "test_a_vcpu_whose_cr3_is_not_the_pinned_l4",
    "%s: d%d vCPU%d run state %d": "test_an_unknown_run_state",
    "%s: the ABI must come before the ports": "test_fifo_after_the_ports",
    "%s: d%d FIFO page gfn 0x%x is not populated": "test_a_fifo_page_not_populated",
    "%s: d%d IOMMU root 0x%x is not among its tables": "test_an_iommu_root_outside_its_tables",
    "%s: d%d is PV and has no HVM parameters": "test_hvm_parameters_of_a_pv_domain",
    "%s: d%d HVM parameter %d does not exist (Xen has %d)": "test_an_hvm_parameter_xen_does_not_have",
    "%s: d%d HVM parameter %d belongs in %s": "test_an_hvm_parameter_in_the_wrong_record",
    "%s: d%d HVM parameter %d is given twice": "test_an_hvm_parameter_given_twice",
    # links between domains
    "%s: d%d port %d kind %d": "test_a_port_number_or_kind_out_of_range",
    "%s: d%d port %d is bound to d%d port %d, which does not exist or does not point back":
        "test_stream::test_a_port_that_does_not_point_back",
    "%s: d%d port %d waits for d%d, which is not in the stream": "test_an_unbound_port_waiting_for_a_missing_domain",
    "%s: d%d's device model runs in d%d, which is not in the stream":
        "test_stream::test_a_dependency_on_a_domain_that_is_not_there",
    "%s: d%d ioreq page gfn 0x%x is not populated": "test_an_ioreq_page_not_populated",
    "%s: d%d has %d vCPUs but %d ioreq ports": "test_ioreq_ports_for_every_vcpu",
    "%s: d%d ioreq port %d is not bound to d%d port %d": "test_ioreq_ports_bound_to_the_device_model",
    "%s: d%d maps a grant of d%d, which is not in the stream": "test_a_grant_map_of_a_missing_domain",
    "%s: d%d maps frame 0x%x as d%d ref %d, but d%d does not own it":
        "test_a_grant_map_of_a_frame_the_granter_does_not_own",
    "%s: d%d maps gfn 0x%x of d%d at frame 0x%x, which d%d does not map there":
        "test_a_foreign_map_of_a_page_not_mapped_there",
    # the restore passes
    "d%d page tables do not validate (error %d at mfn 0x%x entry %d)": "test_page_tables_that_do_not_validate",
    "d%d: no guest info page at gfn 0 (magic 0x%x)": "test_a_guest_without_its_info_page",
    "d%d vCPU%d working set: %s": "test_a_working_set_not_populated",
    "dom0 runs no backend for d%d's frontend": "test_dom0_without_a_backend_for_a_frontend",
}
REFUSALS = ("_fail", "StreamError", "RestoreFailure")


class Site:
    def __init__(self, module, fmt, func, line, node):
        self.module, self.fmt, self.func, self.line, self.node = module, fmt, func, line, node
        # The message the format makes, as a pattern: %s anything, %d and %x numbers.
        parts = re.split(r"(%[dxs])", fmt or "")
        self.pattern = re.compile("".join({"%d": r"-?\d+", "%x": "[0-9a-f]+", "%s": ".*"}.get(p, re.escape(p))
                                          for p in parts) + r"\Z", re.S)

    def __repr__(self):
        return "%s.py:%d in %s: %r" % (self.module, self.line, self.func.name if self.func else "?", self.fmt)


def refusal_sites(module, source):
    """Every _fail(...), StreamError(...) and RestoreFailure(...) in a
    module's source but _fail's own, with its message format (None where
    the message is not a literal %-format, which the test then refuses)."""
    tree = ast.parse(source)
    sites = []

    def visit(node, func, stmt_line):
        for child in ast.iter_child_nodes(node):
            line = child.lineno if isinstance(child, ast.stmt) else stmt_line
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child, line)
                continue
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id in REFUSALS \
                    and not (func and func.name == "_fail"):
                arg = child.args[0] if child.args else None
                if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mod):
                    arg = arg.left
                fmt = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
                sites.append(Site(module, fmt, func, line, child))
            visit(child, func, line)
    visit(tree, None, 1)
    return sites


def site_of(sites, message, raised):
    """The site that raised: in the function holding the line its module
    raised at (raised: (module, line)), the last one at or before it whose
    format makes the message (an exception made on one line may be raised a
    few lines on)."""
    if raised is None:
        return None
    module, line = raised
    here = [s for s in sites if s.module == module and s.func is not None
            and s.func.lineno <= line <= s.func.end_lineno
            and s.line <= line and s.pattern.match(message)]
    # The innermost function first (a nested claim() inside check()), then the nearest line.
    here.sort(key=lambda s: (s.func.lineno, s.line))
    return here[-1] if here else None


def run_now(request, name):
    """Run a listed test that has not run in this session (deselected, or
    in a module that comes later), with the fixtures it asks for."""
    module, _, func = name.partition("::")
    fn = getattr(importlib.import_module(module), func)
    kwargs = {p: request.getfixturevalue(p) for p in inspect.signature(fn).parameters}
    K.CURRENT.append(name)
    try:
        fn(**kwargs)
    finally:
        K.CURRENT.pop()


def test_every_refusal_site_has_a_test(request):
    """Generated from the source of xen#2's refusing modules (mapped, check,
    apply: the installed ones, which the tests run): each refusal is listed
    in SITES with a test, and that test, run in this session or now, made
    xen#2 refuse at that very site (the module and line it raised from, and
    the message its format makes)."""
    sites = [s for name, module in K.REFUSING.items()
             for s in refusal_sites(name, pathlib.Path(module.__file__).read_text())]
    assert len(sites) >= 50, sites             # the parse found them
    assert all(s.fmt for s in sites), "a refusal without a literal %%-format message: %s" \
        % [s for s in sites if not s.fmt]
    formats = [s.fmt for s in sites]
    assert len(set(formats)) == len(formats), "two refusals with one message: tell them apart"
    missing = [s for s in sites if s.fmt not in SITES]
    assert not missing, "refusals without a test (write one, list it in SITES): %s" % missing
    stale = sorted(set(SITES) - set(formats))
    assert not stale, "SITES lists refusals xen#2 no longer makes: %s" % stale
    names = {fmt: test if "::" in test else "test_restore_refusals::" + test for fmt, test in SITES.items()}
    for name in sorted(set(names.values())):
        if name not in K.PRODUCED:
            run_now(request, name)
    uncovered = []
    for s in sites:
        made = [site_of(sites, message, raised) for message, raised in K.PRODUCED.get(names[s.fmt], [])]
        if s not in made:
            uncovered.append((s, names[s.fmt], K.PRODUCED.get(names[s.fmt])))
    assert not uncovered, "listed tests that do not make their refusal: %s" % uncovered
