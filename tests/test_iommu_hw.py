"""The IOMMU as hardware (docs/iommu.md): a chipset file beside RAM that
translates a device's DMA through the root, context and second-level tables
the hypervisor sets up, caches what it walked until an invalidation says
otherwise, logs what it cannot translate, and that a live update leaves
alone: xen#2 takes it over without touching a register or a table."""
import struct


from hyperv_sim._lu_hw import ffi, lib as hw
from hyperv_sim.chipset import Chipset, path_beside
from hyperv_sim.guest import P2M
from hyperv_sim.chipset import parse_bdf
from xen_public.units import MiB

from helpers import NIC_BDF, boot_host, read_ram, stop_host

PAGE = 4096
NIC = NIC_BDF


def translate(hv, bdf, iova, write=True):
    """(fault reason or 0, machine address) for one DMA of the device."""
    out = ffi.new("uint64_t *")
    reason = hw.lu_hw_translate(hv.chipset.c, hv.ram.base, hv.ram.nr_frames, parse_bdf(bdf), iova,
                                int(write), out)
    return reason, out[0]


def test_every_iova_of_the_device_lands_where_the_p2m_says(nic_hv):
    hv = nic_hv
    dom = next(d for d in hv.domains.values() if d.name == "nic")
    p2m = P2M(dom.p2m)
    regs = hv.chipset.regs
    assert regs.gsts & hw.LU_VTD_TE and regs.srtp_count == 1 and regs.te_enables == 1
    for gfn in range(dom.nr_frames):
        iova = gfn * PAGE + (gfn * 8) % PAGE
        assert translate(hv, NIC, iova) == (0, p2m.mfn(gfn) * PAGE + (gfn * 8) % PAGE), gfn
    # The last 64 pages walked are cached: asked again, the IOTLB answers.
    hits = regs.iotlb_hits
    for gfn in range(dom.nr_frames - hw.LU_IOTLB_ENTRIES, dom.nr_frames):
        assert translate(hv, NIC, gfn * PAGE)[0] == 0
    assert regs.iotlb_hits - hits == hw.LU_IOTLB_ENTRIES
    assert hv.chipset.faults() == []


def test_what_cannot_be_translated_is_logged_and_dropped(nic_hv):
    hv = nic_hv
    dom = next(d for d in hv.domains.values() if d.name == "nic")
    beyond = dom.nr_frames * PAGE + 0x10
    assert translate(hv, NIC, beyond) == (hw.LU_FAULT_NOT_PRESENT, 0)
    assert translate(hv, "0000:03:01.0", 0, write=False)[0] == hw.LU_FAULT_CONTEXT_NOT_PRESENT
    assert translate(hv, "0000:07:00.0", 0)[0] == hw.LU_FAULT_ROOT_NOT_PRESENT
    assert hv.chipset.faults() == [(0x0300, beyond, hw.LU_FAULT_NOT_PRESENT, True),
                                   (0x0308, 0, hw.LU_FAULT_CONTEXT_NOT_PRESENT, False),
                                   (0x0700, 0, hw.LU_FAULT_ROOT_NOT_PRESENT, True)]
    assert hv.chipset.regs.fsts & hw.LU_FSTS_PPF
    from hyperv_sim.verify import verify_host
    problems = [p["detail"] for p in verify_host(nic_hv)["problems"]]
    assert "device 0000:03:00.0: IOMMU fault on write at IOVA 0x%x: no mapping" % beyond in problems
    assert "device 0000:07:00.0: IOMMU fault on write at IOVA 0x0: root entry not present" in problems


def test_a_cached_translation_lasts_until_it_is_invalidated(nic_hv):
    hv = nic_hv
    dom = next(d for d in hv.domains.values() if d.name == "nic")
    p2m = P2M(dom.p2m)
    gfn = 5
    assert translate(hv, NIC, gfn * PAGE) == (0, p2m.mfn(gfn) * PAGE)
    # Change the leaf behind the IOMMU's back: it keeps what it cached.
    leaf = _leaf_address(hv, dom.iommu_root, gfn)
    other = p2m.mfn(gfn + 1)
    hv.ram.write(leaf, struct.pack("<Q", other * PAGE | 3))
    assert translate(hv, NIC, gfn * PAGE) == (0, p2m.mfn(gfn) * PAGE)
    # A page invalidation for the domain: the next request walks again.
    hv.iommu._invalidate([(hw.LU_INV_IOTLB | hw.LU_INV_PAGE << 4 | dom.domid << 16, gfn * PAGE)])
    assert translate(hv, NIC, gfn * PAGE) == (0, other * PAGE)
    hv.ram.write(leaf, struct.pack("<Q", p2m.mfn(gfn) * PAGE | 3))


def test_a_destroyed_domains_device_translates_nothing(nic_hv):
    hv = nic_hv
    assert translate(hv, NIC, 0)[0] == 0
    hv.destroy_domain("nic")
    assert NIC not in hv.pci_assigned
    assert translate(hv, NIC, 0)[0] == hw.LU_FAULT_CONTEXT_NOT_PRESENT


def _leaf_address(hv, root_mfn, gfn):
    table = root_mfn * PAGE
    for level in (4, 3, 2):
        e, = struct.unpack("<Q", hv.ram.read(table + ((gfn >> (9 * (level - 1))) & 511) * 8, 8))
        table = e & 0x000FFFFFFFFFF000
    return table + (gfn & 511) * 8


def test_a_live_update_leaves_the_iommu_as_it_runs(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30, cmdline="liveupdate=64M dom0_mem=128M")
    try:
        host.toolstack("create", name="g1", type="hvm", memory=64 * MiB, vcpus=1, pci=[NIC])
        host.toolstack("create", name="g2", type="pv", memory=32 * MiB, vcpus=1, pci=["0000:04:02.1"])
        chipset = Chipset.open(path_beside(str(state / "ram")))
        try:
            regs = chipset.regs
            before = _registers(regs)
            # The posted-interrupt descriptors (the frame after the remapping
            # table) change as interrupts come and go; no table does.
            irt = regs.irta_active // PAGE
            tables = [(first, read_ram(host, first * PAGE, (1 if first == irt else n) * PAGE))
                      for first, n in _iommu_regions(host)]
            # Root, queue (2 frames), remapping table (and descriptors), a context table per bus.
            assert len(tables) == 5
            for image in (sim_images["4.19"], sim_images["4.18"]):
                host.load_lu(image)
                res = host.kexec_lu("exec")
                assert res.returncode == 0, res
                # Not one register written, not one table byte changed.
                assert _registers(regs) == before
                assert [(first, read_ram(host, first * PAGE, len(data))) for first, data in tables] == tables
                assert chipset.faults() == []
                rep = host.toolstack("verify")
                assert rep["ok"], rep["problems"]
        finally:
            chipset.close()
    finally:
        stop_host(state)
    # Power-off removes the chipset with RAM.
    assert not (state / "chipset").exists() and not (state / "ram").exists()


def _registers(regs):
    return (regs.gsts, regs.rtaddr, regs.rtaddr_active, regs.irta_active, regs.iqa, regs.iqh, regs.iqt,
            regs.srtp_count,
            regs.te_enables, regs.global_flushes, regs.descriptors_done, regs.fsts, regs.nr_faults)


def _iommu_regions(host):
    from hyperv_sim.liveupdate.stream import iter_sections
    from xen_public import lurecords as R, lustream as ls
    res = host.hyperv_sim("stream", "save", "-o", str(host.state_dir / "s.bin"))
    assert res.returncode == 0, res
    data = (host.state_dir / "s.bin").read_bytes()
    for header, recs in iter_sections(data):
        for _, rtype, body in recs:
            if rtype == ls.REC_LU_XEN_REGIONS:
                _, regions = R.XEN_REGIONS.decode(body)
                return [(first, n) for first, n, kind, _ in regions if kind == R.REGION_IOMMU]
    raise AssertionError("no LU_XEN_REGIONS")
