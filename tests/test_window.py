"""Load-window arithmetic at its edges: exact fit, one byte over, unaligned."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_public.units import MiB
from kexec_lu.window import LU_BOOTMEM_MIN, WindowError, plan_in_region, plan_liveupdate

PAGE = 4096
ALIGN = 2 * MiB
XEN_START = 0x10000000          # 256 MiB, 2 MiB-aligned, as the bootloader places it
XEN_SIZE = 0x300000


def plan(lu_size, load_size, xen_size=XEN_SIZE, align=ALIGN, **kw):
    return plan_liveupdate(XEN_START - lu_size, lu_size, XEN_START, xen_size, load_size, align, **kw)


def test_same_size_image_replaces_xen_in_place():
    p = plan(64 * MiB, XEN_SIZE)
    assert p.image_start == XEN_START
    assert p.bootmem_start == XEN_START - 64 * MiB
    assert p.bootmem_size == 64 * MiB
    assert p.breadcrumb_addr == p.bootmem_start
    assert p.bootinfo_addr == XEN_START - PAGE
    assert p.liveupdate_param() == "liveupdate=64M@0x%x" % (XEN_START - 64 * MiB)


def test_exact_fit_leaves_the_minimum_bootmem():
    p = plan(LU_BOOTMEM_MIN, XEN_SIZE)
    assert p.image_start == XEN_START
    assert p.bootmem_size == LU_BOOTMEM_MIN
    assert p.bootinfo_addr == XEN_START - PAGE


def test_one_byte_over_drops_a_whole_alignment_step_and_fails():
    with pytest.raises(WindowError) as e:
        plan(LU_BOOTMEM_MIN, XEN_SIZE + 1)
    # The image would start at the next 2 MiB boundary down: 2 MiB below the
    # floor that leaves xen#2 its minimum bootmem.
    assert e.value.shortfall == ALIGN
    assert "%d bytes" % e.value.shortfall in str(e.value)
    assert e.value.suggested_lu_size == 3 * MiB
    assert "liveupdate=3M" in str(e.value)
    # And what it suggests does fit, exactly.
    p = plan(e.value.suggested_lu_size, XEN_SIZE + 1)
    assert p.image_start == XEN_START - ALIGN
    assert p.bootmem_size == LU_BOOTMEM_MIN


def test_bigger_image_grows_down_into_bootmem():
    p = plan(64 * MiB, 7 * MiB)                 # xen#2 much larger than xen#1
    # The end of Xen is XEN_START + 3 MiB; 7 MiB below it, aligned down.
    assert p.image_start == XEN_START - 4 * MiB
    assert p.image_start % ALIGN == 0
    assert p.bootmem_size == p.image_start - p.bootmem_start


def test_unaligned_end_of_xen_rounds_the_image_down():
    # The real Debian image: 0x3a7000 bytes in memory, so Xen ends off 2 MiB.
    p = plan(64 * MiB, 0x3a7000, xen_size=0x3a7000)
    assert p.image_start == XEN_START
    assert p.image_end == XEN_START + 0x3a7000


def test_unaligned_bootmem_start_keeps_whole_mib_and_the_info_page_inside():
    lu_start = XEN_START - 64 * MiB + 0x800     # not even page-aligned
    p = plan_liveupdate(lu_start, XEN_START - lu_start, XEN_START, XEN_SIZE, XEN_SIZE, ALIGN)
    assert p.bootmem_size % MiB == 0
    assert p.bootmem_start <= p.bootinfo_addr < p.bootmem_start + p.bootmem_size <= p.image_start


def test_bootmem_not_below_xen_is_refused():
    with pytest.raises(WindowError, match="not directly below Xen"):
        plan_liveupdate(XEN_START - 64 * MiB - PAGE, 64 * MiB, XEN_START, XEN_SIZE, XEN_SIZE, ALIGN)


def test_no_bootmem_is_refused_with_the_option_to_set():
    with pytest.raises(WindowError, match="liveupdate=<size>M"):
        plan_liveupdate(0, 0, XEN_START, XEN_SIZE, XEN_SIZE, ALIGN)


def test_max_addr_pushes_the_image_down():
    p = plan(64 * MiB, XEN_SIZE, max_addr=XEN_START - 1)
    assert p.image_end <= XEN_START
    assert p.image_start == XEN_START - 4 * MiB


def test_mem_min_above_the_placement_is_refused():
    with pytest.raises(WindowError, match="below its lowest allowed address"):
        plan(64 * MiB, XEN_SIZE, mem_min=XEN_START + PAGE)


@settings(max_examples=400, deadline=None)
@given(lu_mib=st.integers(1, 256), xen_pages=st.integers(1, 4096),
       load_pages=st.integers(1, 16384), align_shift=st.integers(12, 24))
def test_placement_invariants(lu_mib, xen_pages, load_pages, align_shift):
    lu_size, xen_size, load, align = lu_mib * MiB, xen_pages * PAGE, load_pages * PAGE, 1 << align_shift
    try:
        p = plan(lu_size, load, xen_size=xen_size, align=align)
    except WindowError as e:
        assert e.shortfall > 0
        fits = plan(e.suggested_lu_size, load, xen_size=xen_size, align=align)
        assert fits.bootmem_size >= LU_BOOTMEM_MIN
        with pytest.raises(WindowError):
            plan(e.suggested_lu_size - MiB, load, xen_size=xen_size, align=align)
        return
    window_start, window_end = XEN_START - lu_size, XEN_START + xen_size
    assert p.image_start % align == 0
    assert window_start + LU_BOOTMEM_MIN <= p.image_start
    assert p.image_end == p.image_start + load <= window_end
    assert p.image_start + align > window_end - load          # the top: no higher aligned spot
    assert p.bootmem_start == window_start
    assert LU_BOOTMEM_MIN <= p.bootmem_size <= p.image_start - window_start
    assert p.bootmem_size % MiB == 0
    assert p.breadcrumb_addr == window_start
    assert p.breadcrumb_addr < p.bootinfo_addr < p.bootmem_start + p.bootmem_size


def test_crash_image_goes_low_in_the_crash_region():
    p = plan_in_region("crash", 0x20000000, 256 * MiB, XEN_SIZE, ALIGN)
    assert p.image_start == 0x20000000 + ALIGN      # the info page needs the page below
    assert p.bootinfo_addr == p.image_start - PAGE


def test_crash_image_too_big_for_the_region():
    with pytest.raises(WindowError, match="does not fit") as e:
        plan_in_region("crash", 0x20000000, 4 * MiB, 3 * MiB, ALIGN)
    assert e.value.shortfall == ALIGN + 3 * MiB - 4 * MiB


def test_no_crash_region():
    with pytest.raises(WindowError, match="crashkernel="):
        plan_in_region("crash", 0, 0, XEN_SIZE, ALIGN)


# ---------------------------------------------------------------- what a refusal says
# kexec-lu prints these to the operator: the addresses and byte counts in
# them are what the operator acts on, so they are asserted exactly.

def refusal(fn, *args, **kw):
    with pytest.raises(WindowError) as e:
        fn(*args, **kw)
    return e.value


def test_bootmem_not_below_xen_names_both_ranges():
    e = refusal(plan_liveupdate, 0x1000000, 0x400000, 0x2000000, 0x300000, 0x100000, PAGE)
    assert str(e) == ("LU bootmem [0x1000000, 0x1400000) is not directly below Xen "
                      "[0x2000000, 0x2300000): no contiguous load window")


def test_an_empty_image_is_refused_and_a_one_byte_one_placed():
    e = refusal(plan, 64 * MiB, 0)
    assert str(e) == "image has nothing to load"
    p = plan(64 * MiB, 1, align=PAGE)
    assert (p.image_start, p.image_end) == (XEN_START + XEN_SIZE - PAGE, XEN_START + XEN_SIZE - PAGE + 1)


def test_exactly_the_minimum_bootmem_under_a_mem_max_below_xen():
    # The image must end at or below 0x10100000 - 1: it goes at the floor exactly.
    lu = 8 * MiB
    floor = XEN_START - lu + LU_BOOTMEM_MIN
    p = plan(lu, MiB, align=MiB, mem_max=floor + MiB - 1)
    assert (p.image_start, p.bootmem_size) == (floor, LU_BOOTMEM_MIN)
    e = refusal(plan, lu, MiB, align=MiB, mem_max=floor + MiB - 2)
    assert str(e) == ("the image must end at or below 0x%x (--mem-max or the image's max_addr), "
                      "which leaves no room for it above 0x%x in the window [0x%x, 0x%x)"
                      % (floor + MiB - 2, floor, XEN_START - lu, XEN_START + XEN_SIZE))


def test_an_image_as_big_as_the_address_space_below_the_window_end():
    # An image exactly as big as everything below the window's end would
    # start at 0; one byte bigger has no start at all: the shortfall says so.
    lu_start, end = XEN_START - 4 * MiB, XEN_START + XEN_SIZE
    floor = lu_start + LU_BOOTMEM_MIN
    for load, short in ((end, floor), (end + 1, floor + 1)):
        e = refusal(plan_liveupdate, lu_start, 4 * MiB, XEN_START, XEN_SIZE, load, PAGE)
        assert e.shortfall == short
        assert str(e).startswith("image needs %d bytes more than the window [0x%x, 0x%x) holds"
                                 % (short, lu_start, end))


def test_the_boot_information_page_against_mem_min():
    # 64 MiB of bootmem below a 2 MiB-aligned image: the page is its last one.
    p = plan(64 * MiB, XEN_SIZE)
    info = p.bootinfo_addr
    assert plan(64 * MiB, XEN_SIZE, mem_min=info).bootinfo_addr == info
    e = refusal(plan, 64 * MiB, XEN_SIZE, mem_min=info + 1)
    assert str(e) == ("the boot-information page goes at the top of xen#2's LU bootmem, "
                      "0x%x, below --mem-min 0x%x" % (info, info + 1))


def test_a_region_at_address_zero_keeps_page_zero_for_the_boot_information():
    p = plan_in_region("crash", 0, 16 * MiB, MiB, PAGE)
    assert (p.bootinfo_addr, p.image_start) == (0, PAGE)


def test_a_region_too_small_says_by_how_much():
    e = refusal(plan_in_region, "crash", 0x20000000, 2 * MiB, 2 * MiB, PAGE)
    assert e.shortfall == PAGE
    assert str(e) == ("image of %d bytes does not fit in [0x20000000, 0x20200000) at alignment "
                      "0x1000 (4096 bytes short)" % (2 * MiB))
    e = refusal(plan_in_region, "default", 0x20000000, 64 * MiB, 2 * MiB, PAGE,
                mem_max=0x20200000 - 1)
    assert e.shortfall == PAGE
    assert str(e) == ("image of %d bytes does not fit in [0x20000000, 0x20200000) at alignment "
                      "0x1000 (4096 bytes short)" % (2 * MiB))
