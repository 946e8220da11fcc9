"""The simulated host at boot and its domains, looked at from inside:
frame table, allocator and host RAM."""
import os
import pytest

from hyperv_sim._lu_core import lib
from hyperv_sim.frametable import FrameTable
from hyperv_sim.errors import BootFailure, DomainError
from xen_public.abi import DOMID_INVALID, DOMID_XEN, PAGE_SIZE
from xen_public.units import GiB, MiB

from helpers import make_hypervisor, power_off


def frames(nbytes):
    return nbytes // PAGE_SIZE


def test_boot_places_xen_2mib_aligned_below_4g_with_bootmem_directly_below(hv):
    assert hv.xen_start % (2 * MiB) == 0
    assert hv.xen_start + hv.xen_size <= 4 * GiB
    assert hv.lu_size == 64 * MiB
    assert hv.lu_start + hv.lu_size == hv.xen_start
    ft = hv.frametable
    assert ft.all_match(frames(hv.lu_start), frames(hv.lu_size), DOMID_XEN, lib.LU_USE_LU_BOOTMEM)
    assert ft.all_match(frames(hv.xen_start), frames(hv.xen_size), DOMID_XEN, lib.LU_USE_XEN_IMAGE)
    assert ft.all_match(0, frames(MiB), DOMID_XEN, lib.LU_USE_RESERVED)


def test_high_preference_on_a_big_host_puts_xen_just_below_4g(tmp_path, sim_images):
    hv = make_hypervisor(tmp_path / "big", sim_images["4.18"], memory=8 * GiB)
    try:
        # 3 MiB image, 2 MiB alignment, max_addr 4 GiB - 1.
        assert hv.xen_start == 4 * GiB - 4 * MiB
        # The frame table sits at the top of RAM, in Xen-owned frames outside bootmem.
        ft_bytes = FrameTable.bytes_for(hv.ram.nr_frames)
        assert hv.frametable.base_maddr + ft_bytes <= 8 * GiB
        assert hv.frametable.base_maddr >= 4 * GiB
        assert hv.frametable.all_match(frames(hv.frametable.base_maddr), frames(ft_bytes),
                                       DOMID_XEN, lib.LU_USE_XENHEAP)
    finally:
        power_off(hv)


def test_dom0_is_created_at_boot_with_dom0_mem(hv):
    dom0 = hv.domains[0]
    assert dom0.name == "Domain-0" and dom0.control and dom0.dtype == "pv"
    assert dom0.memory_bytes == 256 * MiB
    assert hv.frametable.count(0, lib.LU_USE_GUEST) == frames(256 * MiB)


def test_free_memory_is_everything_not_claimed(hv):
    hist = hv.frametable.histogram()
    assert sum(hist.values()) == hv.ram.nr_frames
    assert hist["free"] == hv.allocator.free_frames


@pytest.mark.parametrize("dtype", ["pv", "pvh", "hvm"])
def test_guest_frames_are_owned_and_never_in_lu_bootmem(hv, dtype):
    dom = hv.create_domain("g-" + dtype, dtype, 300 * MiB, 2)
    assert dom.nr_frames == frames(300 * MiB)
    assert hv.frametable.count(dom.domid, lib.LU_USE_GUEST) == dom.nr_frames
    lo, hi = frames(hv.lu_start), frames(hv.xen_start + hv.xen_size)
    for gfn, mfn, count in dom.p2m:
        assert mfn + count <= lo or mfn >= hi
    # The P2M covers GFNs 0..n contiguously.
    assert [g for g, _, _ in dom.p2m][0] == 0
    assert sum(c for _, _, c in dom.p2m) == dom.nr_frames


@pytest.mark.parametrize("use, what", [(lib.LU_USE_GUEST, "guest page"),
                                       (lib.LU_USE_SHARED, "shared page"),
                                       (lib.LU_USE_IOMMU_PT, "IOMMU page table")])
def test_preflight_refuses_a_guest_frame_in_lu_bootmem_with_einval(hv, use, what):
    """The errno kexec-lu(8) and docs/privcmd.md give: -EINVAL, naming the
    owner; bootmem's first frame past the breadcrumb page is enough."""
    from hyperv_sim.kexec import KexecFailure
    from hyperv_sim.liveupdate.engine import LiveUpdate
    from xen_public import abi
    dom = hv.create_domain("g", "hvm", 16 * MiB, 1)
    lu = LiveUpdate(hv)
    lu._check_bootmem_clean()                      # clean: nothing to say
    hv.frametable.mark(frames(hv.lu_start) + 1, 1, dom.domid, use)
    with pytest.raises(KexecFailure) as e:
        lu._check_bootmem_clean()
    assert (e.value.errno, str(e.value)) == (abi.EINVAL, "a %s of owner %d lies in LU bootmem"
                                             % (what, dom.domid))


def test_memory_exhaustion_changes_nothing(hv):
    free = hv.allocator.free_frames
    with pytest.raises(DomainError, match="out of memory"):
        hv.create_domain("huge", "hvm", 4 * GiB, 1)
    assert hv.allocator.free_frames == free
    assert hv.frametable.count(1, lib.LU_USE_GUEST) == 0
    assert "huge" not in [d.name for d in hv.domains.values()]


def test_destroy_scrubs_and_frees(hv):
    free = hv.allocator.free_frames
    dom = hv.create_domain("victim", "pv", 64 * MiB, 1)
    mfn = dom.p2m[0][1]
    hv.ram.write(mfn * PAGE_SIZE, b"secret" * 100)
    used = hv.ram.disk_usage()
    hv.destroy_domain("victim")
    assert hv.ram.read(mfn * PAGE_SIZE, 600) == bytes(600)
    assert hv.ram.disk_usage() < used
    assert hv.allocator.free_frames == free
    assert hv.frametable.entry(mfn)["owner"] == DOMID_INVALID
    # Freed extents merge back: creating the same domain again is one extent.
    again = hv.create_domain("victim2", "pv", 64 * MiB, 1)
    assert len(again.p2m) == 1


def test_domain_validation(hv):
    with pytest.raises(DomainError, match="already exists"):
        hv.create_domain("Domain-0", "pv", 64 * MiB, 1)
    with pytest.raises(DomainError, match="invalid domain name"):
        hv.create_domain("bad name", "pv", 64 * MiB, 1)
    with pytest.raises(DomainError, match="invalid domain type"):
        hv.create_domain("x", "arm", 64 * MiB, 1)
    with pytest.raises(DomainError, match="vCPU"):
        hv.create_domain("x", "pv", 64 * MiB, 0)
    with pytest.raises(DomainError, match="control domain"):
        hv.destroy_domain(0)
    with pytest.raises(DomainError, match="no such domain"):
        hv.destroy_domain("ghost")


def test_pause_and_unpause(hv):
    dom = hv.create_domain("p", "pvh", 32 * MiB, 1)
    assert dom.state == "running"
    hv.set_paused("p", True)
    assert hv.find_domain(dom.domid).state == "paused"
    hv.set_paused(str(dom.domid), False)
    assert dom.state == "running"


def test_crashkernel_reserves_an_aligned_region_below_4g(tmp_path, sim_images):
    hv = make_hypervisor(tmp_path / "c", sim_images["4.18"], memory=8 * GiB,
                         cmdline="liveupdate=64M crashkernel=128M")
    try:
        start, size = hv.crash_region
        assert size == 128 * MiB and start % (16 * MiB) == 0 and start + size <= 4 * GiB
        assert hv.frametable.all_match(frames(start), frames(size), DOMID_XEN, lib.LU_USE_CRASH)
    finally:
        power_off(hv)


def test_bootmem_that_does_not_fit_below_xen_fails_boot(tmp_path, sim_images):
    # On a 64 MiB host Xen sits near the top; 60M of bootmem cannot fit below it.
    with pytest.raises(BootFailure, match="does not fit below Xen"):
        make_hypervisor(tmp_path / "s", sim_images["4.18"], memory=64 * MiB,
                        cmdline="liveupdate=60M dom0_mem=4M")


def test_unknown_boot_options_are_logged_not_fatal(tmp_path, sim_images):
    hv = make_hypervisor(tmp_path / "u", sim_images["4.18"], cmdline="liveupdate=8M dom0_mem=64M frobnicate=1")
    try:
        assert any('parameter "frobnicate=1" unknown' in l for l in hv.console.lines())
    finally:
        power_off(hv)


def test_kexec_op_from_a_guest_is_refused(hv):
    """Only the control domain may use kexec_op (Xen's XSM check): the same
    call issued on behalf of d1 gets -EPERM and changes nothing."""
    from hyperv_sim._lu_core import ffi
    from hyperv_sim.hypercalls import CallerMemory, Dispatcher
    from xen_public import abi
    hv.create_domain("guest", "pv", 32 * MiB, 1)
    rng = ffi.new("xen_kexec_range_t *", {"range": abi.KEXEC_RANGE_MA_XEN})
    addr = int(ffi.cast("uintptr_t", rng))
    call = ffi.new("privcmd_hypercall_t *")
    call.op, call.arg[0], call.arg[1] = abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_get_range, addr
    before = bytes(ffi.buffer(rng))
    d, me = Dispatcher(hv), CallerMemory(os.getpid())
    assert d.call(ffi.buffer(call)[:], me, caller_domid=1) == -abi.EPERM
    assert bytes(ffi.buffer(rng)) == before                     # nothing written back
    assert d.call(ffi.buffer(call)[:], me, caller_domid=0) == 0
    assert rng.start == hv.xen_start
