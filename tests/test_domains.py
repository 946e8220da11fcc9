"""Domains with the state Xen really has, running workloads, and the
verifier catching what must never happen."""
import time

import pytest

from hyperv_sim._lu_core import ffi, lib
from hyperv_sim.grant import FIRST_FREE_REF
from hyperv_sim.guest import P2M
from hyperv_sim.errors import DomainError
from xen_public import abi
from xen_public.abi import PAGE_SIZE
from xen_public.units import GiB, MiB

from helpers import make_hypervisor, power_off, wait_for


@pytest.fixture
def busy_hv(tmp_path, sim_images):
    """An in-process hypervisor like conftest's `hv`, but on a 4 GiB host
    with one domain of every kind and every feature."""
    hv = make_hypervisor(tmp_path / "h", sim_images["4.18"], memory=4 * GiB,
                         cmdline="liveupdate=64M dom0_mem=512M")
    hv.create_domain("pv", "pv", 256 * MiB, 2)
    hv.create_domain("pvh", "pvh", 256 * MiB, 2, evtchn_abi="fifo", grant_version=2)
    hv.create_domain("hvm", "hvm", 512 * MiB, 2, pci=["0000:03:00.0"])
    hv.create_domain("hvm-fifo", "hvm", 256 * MiB, 1, evtchn_abi="fifo", grant_version=2)
    yield hv
    power_off(hv)


def problems(hv, check=None):
    rep = hv.verify()
    return [p for p in rep["problems"] if check is None or p["check"] == check]


def steps(hv, name):
    return hv.find_domain(name).steps


def test_every_domain_kind_runs_and_verifies(busy_hv):
    wait_for(lambda: all(d.steps > 2 * (1 << 16) for d in busy_hv.domains.values()),
             what="every guest to do I/O and ring requests")
    rep = busy_hv.verify()
    assert rep["ok"], rep["problems"]
    assert [d["name"] for d in rep["domains"]] == ["Domain-0", "pv", "pvh", "hvm", "hvm-fifo"]
    hvm = busy_hv.find_domain("hvm")
    assert all(v.regs.r12 >= 1 for v in hvm.vcpu_list()), "HVM I/O completed"
    pv = busy_hv.find_domain("pv")
    assert pv.vcpu_state[0].info.rsp_cons >= 1, "backend answered the frontend"


def test_pv_state(busy_hv):
    pv = busy_hv.find_domain("pv")
    ft, p2m = busy_hv.frametable, P2M(pv.p2m)
    l4 = ft.frames[pv.l4_mfn]
    assert l4.type_info >> 28 == lib.LU_PGT_L4 and l4.type_info & lib.LU_PGT_PINNED
    assert l4.type_info & lib.LU_PGT_COUNT_MASK == 1 + pv.vcpus        # pin + each CR3
    l1 = ft.frames[p2m.mfn(pv.layout.pt_gfns[-1])]
    assert l1.type_info >> 28 == lib.LU_PGT_L1
    for gfn in pv.layout.gdt_gfns:
        assert ft.frames[p2m.mfn(gfn)].type_info >> 28 == lib.LU_PGT_SEG_DESC
    data = ft.frames[p2m.mfn(pv.layout.ws_base_gfn)]
    assert data.type_info == (lib.LU_PGT_WRITABLE << 28) | 1
    assert data.count_info == lib.LU_PGC_ALLOCATED | 2              # allocated + its mapping
    for gfn, mfn, count in pv.p2m:
        assert busy_hv.m2p.check_run(mfn, gfn, count) is None


def test_event_channels_of_both_abis(busy_hv):
    kinds = {p["kind"] for d in busy_hv.domains.values() for p in d.evtchn.describe()}
    assert kinds == {"unbound", "interdomain", "virq", "ipi"}
    pvh = busy_hv.find_domain("pvh")
    assert pvh.evtchn.abi == "fifo"
    # The FIFO event array is a guest page Xen keeps mapped.
    array = P2M(pvh.p2m).mfn(pvh.layout.evtchn_array_gfn)
    assert pvh.evtchn.bits_mfn == array
    assert any(m.mfn == array for m in busy_hv.mappings.xen_maps)
    pv = busy_hv.find_domain("pv")
    assert pv.evtchn.bits_mfn == pv.shared_info_mfn
    console = [p for p in pv.evtchn.describe() if p["kind"] == "unbound"][-1]
    assert console["masked"]


def test_grants_to_dom0_are_mapped_and_marked_in_use(busy_hv):
    for name, version in (("pv", 1), ("pvh", 2)):
        dom = busy_hv.find_domain(name)
        assert dom.grants.version == version
        flags, domid, gfn = dom.grants.entry(FIRST_FREE_REF)
        assert domid == 0 and gfn == dom.layout.ring_gfn
        assert flags & abi.GTF_permit_access and flags & abi.GTF_reading and flags & abi.GTF_writing
        ro_flags = dom.grants.entry(FIRST_FREE_REF + 2)[0]
        assert ro_flags & abi.GTF_readonly and ro_flags & abi.GTF_reading and not ro_flags & abi.GTF_writing
        maps = [m for m in busy_hv.mappings.grant_maps if m.granter == dom.domid]
        assert len(maps) == 3 and all(m.mapper == 0 for m in maps)
        ring = busy_hv.frametable.frames[P2M(dom.p2m).mfn(dom.layout.ring_gfn)]
        # allocated, dom0's grant map (+ the PV guest's own mapping)
        assert ring.count_info & lib.LU_PGC_COUNT_MASK == (3 if name == "pv" else 2)


def test_hvm_ioreq_server_params_and_passthrough(busy_hv):
    hvm = busy_hv.find_domain("hvm")
    srv = hvm.ioreq
    assert srv.dm_domid == 0 and len(srv.ports) == hvm.vcpus
    assert hvm.hvm_params[abi.HVM_PARAM_IOREQ_PFN] == srv.ioreq_gfn == hvm.layout.nr_pages - 4
    assert hvm.hvm_params[abi.HVM_PARAM_STORE_EVTCHN] in hvm.evtchn.ports
    # What libxl 4.17 sets (Xen's numbers, as literals): neither the obsolete
    # PAE_ENABLED (4) nor the NESTEDHVM (24) that Xen 4.15 and later refuse.
    n = hvm.layout.nr_pages
    store, console = (p for p, pt in sorted(hvm.evtchn.ports.items()) if pt.kind == "unbound")
    assert hvm.hvm_params == {1: n - 2, 17: n - 1, 5: n - 4, 6: n - 3, 2: store, 18: console,
                              10: 1, 11: 1}
    # A PVH guest has the HVM container's special pages and ports, no ioreq
    # pages and no HPET; a PV guest has no parameters at all.
    pvh = busy_hv.find_domain("pvh")
    n = pvh.layout.nr_pages
    store, console = (p for p, pt in sorted(pvh.evtchn.ports.items()) if pt.kind == "unbound")
    assert pvh.hvm_params == {1: n - 2, 17: n - 1, 2: store, 18: console, 10: 1}
    assert (pvh.layout.store_gfn, pvh.layout.console_gfn) == (n - 2, n - 1)
    assert busy_hv.find_domain("pv").hvm_params == {} and busy_hv.domains[0].hvm_params == {}
    assert any(f.domid == hvm.domid and f.mapper == 0 for f in busy_hv.mappings.foreign_maps)
    assert hvm.devices == ["0000:03:00.0"] and busy_hv.pci_assigned["0000:03:00.0"] == hvm.domid
    # IOMMU tables live in Xen frames, outside LU bootmem.
    lu = range(busy_hv.lu_start // PAGE_SIZE, (busy_hv.xen_start + busy_hv.xen_size) // PAGE_SIZE)
    for mfn, count in hvm.iommu_frames:
        assert busy_hv.frametable.all_match(mfn, count, abi.DOMID_XEN, lib.LU_USE_IOMMU_PT)
        assert mfn + count <= lu.start or mfn >= lu.stop
    with pytest.raises(DomainError, match="already assigned"):
        busy_hv.create_domain("thief", "hvm", 64 * MiB, 1, pci=["0000:03:00.0"])


def test_pause_stops_steps_and_unpause_resumes(busy_hv):
    wait_for(lambda: steps(busy_hv, "pvh") > 0, what="pvh to run")
    busy_hv.set_paused("pvh", True)
    before = steps(busy_hv, "pvh")
    time.sleep(0.1)
    assert steps(busy_hv, "pvh") == before
    assert busy_hv.find_domain("pvh").state == "paused"
    busy_hv.set_paused("pvh", False)
    wait_for(lambda: steps(busy_hv, "pvh") > before, what="pvh to resume")
    assert busy_hv.verify()["ok"]


def test_paused_dom0_leaves_hvm_io_in_flight(busy_hv):
    busy_hv.set_paused(0, True)
    hvm = busy_hv.find_domain("hvm-fifo")
    v = hvm.vcpu_state[0]
    # Blocked on I/O is not enough: a request dom0 answered just before the
    # pause is still "blocked" until the vCPU next runs, and then it runs on.
    # A request in the READY state is one the paused device model has not seen.
    wait_for(lambda: v.runstate == lib.LU_RUN_BLOCKED_IO and
             ffi.buffer(v.ioreq, 32)[30][0] & 0x0F == lib.LU_IOREQ_READY,
             what="an I/O request the paused device model has not taken")
    stuck = v.steps
    time.sleep(0.05)
    assert v.steps == stuck                    # not at a restartable boundary: it waits
    assert busy_hv.verify()["ok"]                 # in flight is a legal state
    busy_hv.set_paused(0, False)
    wait_for(lambda: v.steps > stuck, what="the device model to answer")
    assert busy_hv.verify()["ok"]


def test_verify_catches_a_corrupted_guest_page(busy_hv):
    hvm = busy_hv.find_domain("hvm")
    mfn = hvm.ws_mfns[1][0]
    busy_hv.set_paused("hvm", True)        # its next step would overwrite the word again
    busy_hv.ram.write(mfn * PAGE_SIZE + 8 * 3, b"\xde\xad\xbe\xef" * 2)
    found = problems(busy_hv, "memory")
    assert len(found) == 1 and found[0]["domid"] == hvm.domid
    assert "vCPU1" in found[0]["detail"] and "0xefbeaddeefbeadde" in found[0]["detail"]


def test_verify_catches_a_wrong_refcount(busy_hv):
    pv = busy_hv.find_domain("pv")
    mfn = P2M(pv.p2m).mfn(pv.layout.ws_base_gfn + 40)
    busy_hv.frametable.frames[mfn].count_info += 1
    found = problems(busy_hv, "refcount")
    assert len(found) == 1
    assert "mfn 0x%x" % mfn in found[0]["detail"] and "count 3" in found[0]["detail"]
    assert "expected count 2" in found[0]["detail"]


def test_verify_catches_lost_events(busy_hv):
    busy_hv.set_paused(0, True)
    pv, hvm = busy_hv.find_domain("pv"), busy_hv.find_domain("hvm")
    dom0 = busy_hv.domains[0]
    v = hvm.vcpu_state[0]
    wait_for(lambda: v.runstate == lib.LU_RUN_BLOCKED_IO, what="an HVM I/O request")
    # A request made after dom0 stopped is one its backend has not seen.
    ring = pv.vcpu_state[0].ring
    seen = ring.req_prod
    wait_for(lambda: ring.req_prod > seen, what="a ring request dom0 has not seen")
    busy_hv.set_paused("pv", True)        # or its next request would notify again
    assert busy_hv.verify()["ok"]
    dom0.evtchn.clear_pending(hvm.ioreq.ports[0][1])
    dom0.evtchn.clear_pending(pv.frontend.be_port)
    lost = problems(busy_hv, "event")
    assert {p["domid"] for p in lost} == {pv.domid, hvm.domid}
    assert all("lost event" in p["detail"] for p in lost)


def test_verify_catches_m2p_iommu_and_register_damage(busy_hv):
    hvm = busy_hv.find_domain("hvm")
    gfn, mfn, _ = hvm.p2m[0]
    busy_hv.m2p.table[mfn + 5] = 12345
    # An IOMMU leaf pointing at the wrong frame: DMA would hit another page.
    def first_child(table_mfn):
        entry = busy_hv.ram.pointer(table_mfn * PAGE_SIZE, "uint64_t *")[0]
        assert entry & 1
        return entry >> 12
    l1 = first_child(first_child(first_child(hvm.iommu_root)))
    busy_hv.ram.pointer(l1 * PAGE_SIZE, "uint64_t *")[7] += 1 << 12
    pvh = busy_hv.find_domain("pvh")
    busy_hv.set_paused("pvh", True)
    pvh.vcpu_state[1].regs.rax ^= 1
    found = {p["check"]: p["detail"] for p in problems(busy_hv)}
    assert "M2P[0x%x] is 0x3039" % (mfn + 5) in found["m2p"]
    assert "gfn 0x7" in found["iommu"]
    assert found["registers"].startswith("vCPU1") and "rax=" in found["registers"]


def test_destroying_a_domain_dom0_still_maps_leaves_it_dying(busy_hv):
    free = busy_hv.allocator.free_frames
    pv = busy_hv.find_domain("pv")
    size = pv.nr_frames + sum(n for _, n in pv.shared_frames)
    with pytest.raises(DomainError, match="pvh is not dying"):
        busy_hv.detach_domain("pvh")               # only a dying domain is let go of
    busy_hv.destroy_domain("pv", detach=False)
    assert pv.domid in busy_hv.domains and pv.state == "dying"
    assert pv.vcpu_list()[0].on_cpu == 0
    before = pv.steps
    time.sleep(0.05)
    assert pv.steps == before                    # a dying domain runs nothing
    assert busy_hv.verify()["ok"]                   # and keeps every page and count right
    assert busy_hv.allocator.free_frames == free
    busy_hv.detach_domain("pv")                     # dom0's backend lets go
    assert pv.domid not in busy_hv.domains
    assert busy_hv.allocator.free_frames == free + size
    assert not any(m.granter == pv.domid for m in busy_hv.mappings.grant_maps)
    assert busy_hv.verify()["ok"]


def test_destroy_frees_passthrough_and_reassigns(busy_hv):
    busy_hv.destroy_domain("hvm")
    assert "0000:03:00.0" not in busy_hv.pci_assigned
    # The domain's tables are gone; the IOMMU's own stay (it stays on): the
    # root table, the invalidation queue and its status page, the
    # interrupt-remapping table and its posted-interrupt descriptors, bus
    # 3's context table.
    assert busy_hv.frametable.count(abi.DOMID_XEN, lib.LU_USE_IOMMU_PT) == 6
    busy_hv.create_domain("hvm2", "hvm", 64 * MiB, 1, pci=["0000:03:00.0"])
    assert busy_hv.verify()["ok"]


def test_failed_create_leaves_nothing_behind(busy_hv):
    free = busy_hv.allocator.free_frames
    maps = busy_hv.mappings.describe()
    dom0_ports = dict(busy_hv.domains[0].evtchn.ports)
    with pytest.raises(DomainError, match="out of memory"):
        busy_hv.create_domain("huge", "pv", 8 * GiB, 1)
    with pytest.raises(DomainError, match="too few"):
        busy_hv.create_domain("tiny", "pv", 16 * MiB, 128, workload_pages=64)
    assert busy_hv.allocator.free_frames == free
    assert busy_hv.mappings.describe() == maps
    assert busy_hv.domains[0].evtchn.ports == dom0_ports
    assert busy_hv.verify()["ok"]
