"""xen#2's checks at their edges, from both sides: the first and last frame
of a claim, one frame past an extent, one and sixteen crash-image
segments, 128 vCPUs, a record the check must name by its first copy.
Written for what the mutation run of check.py left alive (README,
"Mutation testing"); every expected value is worked out by hand from the
stream's layout, not taken from the code under test."""
import struct

import pytest

from hyperv_sim.chipset import parse_bdf
from hyperv_sim.liveupdate.check import Claims
from hyperv_sim.liveupdate.stream import StreamError
from xen_public import abi, lurecords as R, lustream as ls

import streamkit as K
from streamkit import assemble, at, offset, refuse, replace, saved, sections, value  # noqa: F401 (saved)
from test_restore_refusals import _frame_table_and_crash, _regions, domain, ports, where

PAGE = 4096


# ---------------------------------------------------------------- claims

def test_a_claim_may_end_on_the_last_frame_and_not_past_it():
    c = Claims(10)
    c.add(9, 1, "last", "here")                 # the last frame of RAM
    c.add(0, 1, "first", "here")
    for first, count in ((9, 2), (5, 0), (10, 1)):
        with pytest.raises(StreamError, match="frames 0x%x\\+%d are not inside RAM" % (first, count)):
            c.add(first, count, "bad", "there")


@pytest.mark.parametrize("claims, free", [
    ([], [(0, 10)]),
    ([(0, 2), (2, 3), (7, 3)], [(5, 2)]),         # touching claims leave no empty gap between them
    ([(3, 7)], [(0, 3)]),
    ([(0, 10)], []),
    ([(1, 2), (8, 1)], [(0, 1), (3, 5), (9, 1)]),
])
def test_what_no_claim_covers_is_free_and_nothing_else(claims, free):
    c = Claims(10)
    for first, count in claims:
        c.add(first, count, "claim", "here")
    c.refuse_overlaps()
    assert c.unclaimed() == free


def test_the_first_mib_and_the_hypervisor_image_are_claimed_from_their_first_frame(saved):
    hv, data, _ = saved
    ft, crash = _frame_table_and_crash(data)
    w = where(data, ls.REC_LU_XEN_REGIONS)
    # The first MiB is frames 0 to 0xff: either end clashes with a region there.
    refuse(hv, _regions(data, [ft, crash, (0, 1, 7, 0)]),
           "this hypervisor: frame 0x0 is claimed twice (low memory, and region in %s)" % w)
    refuse(hv, _regions(data, [ft, crash, (0xFF, 1, 7, 0)]),
           "%s: frame 0xff is claimed twice (region, and low memory in this hypervisor)" % w)
    xen_first = hv.xen_start // PAGE
    refuse(hv, _regions(data, [ft, crash, (xen_first, 1, 7, 0)]),
           "this hypervisor: frame 0x%x is claimed twice (hypervisor image, and region in %s)"
           % (xen_first, w))


def test_the_stream_pages_and_the_iommu_tables_are_claimed_too(saved):
    hv, data, _ = saved
    m2p_start, _ = value(data, R.M2P, ls.REC_LU_M2P)
    with pytest.raises(StreamError) as e:
        K.accept(hv, data, stream=K.FakeStream([(m2p_start, 1)]))
    assert str(e.value) == ("%s: frame 0x%x is claimed twice (M2P, and live-update stream in the MFN array)"
                            % (where(data, ls.REC_LU_M2P), m2p_start))
    # d3's IOMMU tables moved onto its own memory.
    root, extents, devices = R.IOMMU.decode(at(data, ls.REC_LU_IOMMU)[1])
    _, ((_, m3, _),) = value(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, 3)
    bad = K.replace_body(data, ls.REC_LU_IOMMU, R.IOMMU.encode(m3, [(m3, 1)], devices))
    with pytest.raises(StreamError, match="frame 0x%x is claimed twice" % m3):
        K.accept(hv, bad)


def test_low_memory_ends_at_the_first_mib(saved):
    hv, data, _ = saved
    ft, crash = _frame_table_and_crash(data)
    K.accept(hv, _regions(data, [ft, crash, (0x100, 1, 7, 0)]))


@pytest.mark.parametrize("domid, rtype", [(3, ls.REC_HVM_PARAMS), (1, ls.REC_X86_PV_INFO)])
def test_a_record_a_domain_may_have_once_given_twice(saved, domid, rtype):
    """Refused by the check, before anything changes: X86_PV_INFO no later
    check reads, so only this one would stop it."""
    hv, data, _ = saved
    secs = sections(data)
    recs = secs[domid + 1][1]
    rec = next(r for r in recs if r[0] == rtype)
    recs.insert(recs.index(rec) + 1, list(rec))
    bad = assemble(secs)
    start = offset(bad, ls.REC_LU_DOMAIN, domid)
    second = [off for off, t, _ in K.records(bad) if t == rtype and off > start][1]
    refuse(hv, bad, "record %s at offset 0x%x: a domain has it more than once" % (ls.record_name(rtype), second))


# ---------------------------------------------------------------- one frame past an extent

def test_pages_one_past_an_extent_are_not_the_domains(saved):
    hv, data, _ = saved
    # d2 (PVH, FIFO): its event pages must lie in its P2M, [0, nr_pages).
    _, ((g0, _, n),) = value(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, 2)
    array, _ = value(data, R.EVTCHN_FIFO, ls.REC_LU_EVTCHN_FIFO)
    refuse(hv, replace(data, R.EVTCHN_FIFO, ls.REC_LU_EVTCHN_FIFO, (array, g0 + n)),
           "%s: d2 FIFO page gfn 0x%x is not populated" % (where(data, ls.REC_LU_EVTCHN_FIFO), g0 + n))
    # d3 (HVM): its ioreq page just past its memory.
    (nr, sid, dm, _, buf, res), pairs = value(data, R.IOREQ_SERVER, ls.REC_LU_IOREQ_SERVER)
    _, ((g3, _, n3),) = value(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, 3)
    bad = replace(data, R.IOREQ_SERVER, ls.REC_LU_IOREQ_SERVER, ((nr, sid, dm, g3 + n3, buf, res), pairs))
    with pytest.raises(StreamError, match=r"d3 .*gfn 0x%x" % (g3 + n3)):
        K.accept(hv, bad)


def test_shared_info_one_past_its_shared_pages_is_refused(saved):
    hv, data, _ = saved
    _, own = value(data, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, 4)
    (m, n, _, _), = [o for o in own if o[2] == R.OWN_SHARED]
    d = domain(data, 4)
    d[5] = m + n
    refuse(hv, replace(data, R.DOMAIN, ls.REC_LU_DOMAIN, d, nth=4),
           "%s: d4 shared info 0x%x is not a page it shares" % (where(data, ls.REC_LU_DOMAIN, 4), m + n))


def test_a_grant_frame_one_past_its_shared_pages_is_refused(saved):
    hv, data, _ = saved
    _, own = value(data, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, 4)
    (m, n, _, _), = [o for o in own if o[2] == R.OWN_SHARED]
    head, _ = value(data, R.GRANT_TABLE, ls.REC_LU_GRANT_TABLE, 4)
    refuse(hv, replace(data, R.GRANT_TABLE, ls.REC_LU_GRANT_TABLE, (head, [(m + n,)]), nth=4),
           "%s: d4 grant frame 0x%x is not a page it shares" % (where(data, ls.REC_LU_GRANT_TABLE, 4), m + n))


def test_a_grant_map_of_the_frame_past_the_granters_memory_is_refused(saved):
    hv, data, _ = saved
    head, maps = value(data, R.GRANT_MAPS, ls.REC_LU_GRANT_MAPS)
    handle, granter, flags, ref, res, _ = maps[0]
    _, extents = value(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, granter)
    _, m, n = max(extents, key=lambda e: e[1])
    bad = replace(data, R.GRANT_MAPS, ls.REC_LU_GRANT_MAPS,
                  (head, [(handle, granter, flags, ref, res, m + n)] + list(maps[1:])))
    refuse(hv, bad, "%s: d0 maps frame 0x%x as d%d ref %d, but d%d does not own it"
           % (where(data, ls.REC_LU_GRANT_MAPS), m + n, granter, ref, granter))


# ---------------------------------------------------------------- the last frame of a run is inside it

def test_the_last_frame_of_a_run_is_inside_it(saved):
    hv, data, _ = saved
    # The IOMMU root may be its tables' last frame.
    root, extents, devices = R.IOMMU.decode(at(data, ls.REC_LU_IOMMU)[1])
    (m, n), = extents
    # The running IOMMU must say so too: the device's context entry moves with it.
    (bdf,) = devices
    sid = parse_bdf(bdf)
    ctx = K.context_entry_address(hv, sid)
    saved_entry = hv.ram.read(ctx, 8)
    hv.ram.write(ctx, struct.pack("<Q", (m + n - 1) * PAGE | 1))
    try:
        K.accept(hv, K.replace_body(data, ls.REC_LU_IOMMU, R.IOMMU.encode(m + n - 1, extents, devices)))
    finally:
        hv.ram.write(ctx, saved_entry)
    # A FIFO page may be its extent's first page.
    _, ((g0, _, _),) = value(data, R.P2M_EXTENTS, ls.REC_LU_P2M_EXTENTS, 2)
    _, control = value(data, R.EVTCHN_FIFO, ls.REC_LU_EVTCHN_FIFO)
    K.accept(hv, replace(data, R.EVTCHN_FIFO, ls.REC_LU_EVTCHN_FIFO, (g0, control)))
    # Shared info may be its last shared page.
    _, own = value(data, R.OWNERSHIP, ls.REC_LU_PAGE_OWNERSHIP, 4)
    (sm, sn, _, _), = [o for o in own if o[2] == R.OWN_SHARED]
    d = domain(data, 4)
    d[5] = sm + sn - 1
    K.accept(hv, replace(data, R.DOMAIN, ls.REC_LU_DOMAIN, d, nth=4))


def first_of(data, rtype, domid):
    """Offset of domain domid's first record of rtype."""
    start = offset(data, ls.REC_LU_DOMAIN, domid)
    return min(off for off, t, _ in K.records(data) if t == rtype and off > start)


# ---------------------------------------------------------------- counts at their limits

def test_a_crash_image_of_one_segment_and_of_sixteen(saved):
    hv, data, _ = saved
    (nr, ktype, res, arch, entry, digest), segs = value(data, R.KEXEC_IMAGE, ls.REC_LU_KEXEC_IMAGE)
    dest = segs[0][0]
    one = [(dest, PAGE, PAGE, 0, 0)]
    sixteen = [(dest + i * PAGE, PAGE, 0, 0, 0) for i in range(abi.KEXEC_SEGMENT_MAX)]
    for items in (one, sixteen):
        K.accept(hv, replace(data, R.KEXEC_IMAGE, ls.REC_LU_KEXEC_IMAGE,
                             ((len(items), ktype, res, arch, dest, digest), items)))


def test_128_vcpus_pass_the_count_check_and_are_held_to_their_records(saved):
    """128 is a domain's most: the count passes, and the vCPU records
    (one, for d4) are what refuses it, naming the first of them."""
    hv, data, _ = saved
    d = domain(data, 4)
    d[3] = 128
    bad = replace(data, R.DOMAIN, ls.REC_LU_DOMAIN, d, nth=4)
    refuse(hv, bad, "record LU_VCPU_STATE at offset 0x%x: d4 has 128 vCPUs but vCPU records [0]"
           % first_of(bad, ls.REC_LU_VCPU_STATE, 4))


def test_a_refusal_about_all_of_a_type_names_its_first_record(saved):
    hv, data, _ = saved
    d = domain(data, 1)                               # d1: two vCPU records
    d[3] = 3
    bad = replace(data, R.DOMAIN, ls.REC_LU_DOMAIN, d, nth=1)
    first = first_of(bad, ls.REC_LU_VCPU_STATE, 1)
    assert sum(1 for off, t, _ in K.records(bad) if t == ls.REC_LU_VCPU_STATE
               and first <= off < offset(bad, ls.REC_LU_DOMAIN, 2)) == 2
    refuse(hv, bad, "record LU_VCPU_STATE at offset 0x%x: d1 has 3 vCPUs but vCPU records [0, 1]" % first)


# ---------------------------------------------------------------- sections and links

def test_an_unknown_optional_record_first_in_a_section_skips_itself_only(saved):
    hv, data, _ = saved
    secs = sections(data)
    secs[2][1].insert(0, [0xC0000099, b"12345678"])   # d1's section, before its LU_DOMAIN
    K.accept(hv, assemble(secs))


def test_a_fifo_domain_without_ports_is_told_so(saved):
    hv, data, _ = saved
    secs = sections(data)
    recs = secs[3][1]                                 # d2: FIFO
    recs[:] = [r for r in recs if r[0] != ls.REC_LU_EVTCHN_PORTS]
    bad = assemble(secs)
    refuse(hv, bad, "domain section at offset 0x%x has no LU_EVTCHN_PORTS record"
           % (offset(bad, ls.REC_LU_DOMAIN, 2) - 16))


def test_a_port_bound_to_a_port_that_does_not_exist(saved):
    """d0's first interdomain port, the first the link check reads,
    bound to a port its peer does not have."""
    hv, data, _ = saved
    inter = R.PORT_KINDS["interdomain"]
    head, items = ports(data, 0)
    port = next(p for p in items if p[1] == inter)
    items = [p[:5] + (999,) + p[6:] if p is port else p for p in items]
    bad = replace(data, R.EVTCHN_PORTS, ls.REC_LU_EVTCHN_PORTS, (head, items), nth=0)
    refuse(hv, bad, "%s: d0 port %d is bound to d%d port 999, which does not exist or does not point back"
           % (where(data, ls.REC_LU_EVTCHN_PORTS, 0), port[0], port[4]))
