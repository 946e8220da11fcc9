"""Load-window arithmetic against a brute-force oracle.

The oracle knows only the rules as docs/memory-layout.md and kexec-lu(8)
state them, and tries every aligned start:

* live update: xen#2 lies in [LU start, end of xen#1), every byte of it at
  or above min_addr/--mem-min and at or below max_addr/--mem-max, at least
  1 MiB of bootmem below it; xen#2's bootmem is the whole MiB below the
  image, its top page the boot information, which must not be below
  --mem-min; the highest such start wins.
* crash and default images: the image in the region, the boot-information
  page right below it, both inside the region and the limits; the lowest
  start wins.

Limits are drawn near the answers so exact fits (an image that ends on the
last allowed byte, one that fills the region) are tried every run.
"""
from hypothesis import example, given, settings, strategies as st

from kexec_lu.window import WindowError, plan_in_region, plan_liveupdate

KiB, MiB = 1 << 10, 1 << 20
PAGE = 4 * KiB


def oracle_liveupdate(lu_start, lu_size, xen_start, xen_size, load, align, min_addr, max_addr,
                      mem_min, mem_max):
    align = max(align, PAGE)
    low = max(min_addr, mem_min or 0)
    high = min(x for x in (max_addr, mem_max, (1 << 64) - 1) if x is not None)
    best = None
    s = lu_start - lu_start % align
    while s + load <= xen_start + xen_size:
        bootmem = (s - lu_start) // MiB * MiB
        if (s >= lu_start + MiB and s >= low and s + load - 1 <= high
                and lu_start + bootmem - PAGE >= (mem_min or 0)):
            best = (s, bootmem)
        s += align
    return best


def oracle_region(region_start, region_size, load, align, min_addr, max_addr, mem_min, mem_max):
    align = max(align, PAGE)
    low = max(min_addr, mem_min or 0)
    high = min(x for x in (max_addr, mem_max, (1 << 64) - 1) if x is not None)
    s = region_start - region_start % align
    while s + load <= region_start + region_size:
        if s - PAGE >= region_start and s - PAGE >= low and s + load - 1 <= high:
            return s
        s += align
    return None


ALIGNS = st.sampled_from([PAGE, 64 * KiB, MiB, 2 * MiB])


@st.composite
def lu_cases(draw):
    align = draw(ALIGNS)
    lu_start = draw(st.integers(16, 256)) * MiB + draw(st.sampled_from([0, PAGE, 3 * PAGE]))
    lu_size = draw(st.integers(1, 24)) * MiB - (lu_start % MiB)
    xen_start = lu_start + lu_size
    xen_size = draw(st.integers(1, 1024)) * PAGE
    load = draw(st.integers(1, 6 * MiB // PAGE)) * PAGE - draw(st.sampled_from([0, 1, 100]))
    end = xen_start + xen_size
    # Limits at, one byte either side of, or away from where the answer lies.
    near = draw(st.integers(lu_start, end))
    nudge = draw(st.sampled_from([-1, 0, 1]))
    mem_max = draw(st.sampled_from([None, near + nudge, end - 1, end - 1 - align]))
    max_addr = draw(st.sampled_from([None, 0xFFFFFFFF, near + nudge]))
    mem_min = draw(st.sampled_from([None, 0, lu_start + MiB - PAGE, near, lu_start]))
    min_addr = draw(st.sampled_from([0, lu_start, near]))
    return lu_start, lu_size, xen_start, xen_size, load, align, min_addr, max_addr, mem_min, mem_max


def _lu(case):
    try:
        p = plan_liveupdate(*case[:6], min_addr=case[6], max_addr=case[7], mem_min=case[8],
                            mem_max=case[9])
    except WindowError:
        return None
    assert p.image_end == p.image_start + case[4]
    assert p.bootinfo_addr == p.bootmem_start + p.bootmem_size - PAGE
    assert p.breadcrumb_addr == p.bootmem_start == case[0]
    return p.image_start, p.bootmem_size


@settings(max_examples=400, deadline=None)
@given(lu_cases())
# Exact fits: the image ends on the last byte --mem-max allows; exactly 1 MiB of bootmem.
@example((64 * MiB, 8 * MiB, 72 * MiB, 2 * MiB, 2 * MiB, 2 * MiB, 0, None, None, 74 * MiB - 1))
@example((64 * MiB, 8 * MiB, 72 * MiB, 2 * MiB, 2 * MiB, 2 * MiB, 0, None, None, 74 * MiB - 2))
@example((64 * MiB, 2 * MiB, 66 * MiB, 2 * MiB, 3 * MiB, PAGE, 0, None, None, None))
@example((64 * MiB, 2 * MiB, 66 * MiB, 2 * MiB, 3 * MiB + 1, PAGE, 0, None, None, None))
@example((64 * MiB, 8 * MiB, 72 * MiB, 2 * MiB, 2 * MiB, 2 * MiB, 72 * MiB, None, None, None))
@example((64 * MiB, 8 * MiB, 72 * MiB, 2 * MiB, 2 * MiB, 2 * MiB, 72 * MiB + 1, None, None, None))
@example((64 * MiB, 8 * MiB, 72 * MiB, 2 * MiB, 2 * MiB, 2 * MiB, 0, 0x4A00000 - 1, None, None))
# The image's max_addr one byte short of, and exactly at, a fit below the
# window's end (an aligned start lower).
@example((64 * MiB, 8 * MiB, 72 * MiB, 2 * MiB, 2 * MiB, 2 * MiB, 0, 72 * MiB - 2, None, None))
@example((64 * MiB, 8 * MiB, 72 * MiB, 2 * MiB, 2 * MiB, 2 * MiB, 0, 72 * MiB - 1, None, None))
def test_live_update_placement_is_the_highest_that_fits(case):
    assert _lu(case) == oracle_liveupdate(*case)


@st.composite
def region_cases(draw):
    align = draw(ALIGNS)
    start = draw(st.integers(16, 512)) * MiB + draw(st.sampled_from([0, PAGE, 5 * PAGE]))
    load = draw(st.integers(1, 8 * MiB // PAGE)) * PAGE - draw(st.sampled_from([0, 1]))
    first = -(-(start + PAGE) // align) * align          # lowest start with its info page inside
    size = draw(st.sampled_from([first - start + load, first - start + load - 1,
                                 first - start + load + 1])) + draw(st.sampled_from(
                                     [0, 0, align, 16 * MiB]))
    near = draw(st.integers(start, start + size))
    mem_max = draw(st.sampled_from([None, near, first + load - 1, first + load - 2]))
    max_addr = draw(st.sampled_from([None, 0xFFFFFFFF, near]))
    mem_min = draw(st.sampled_from([None, start, near, first - PAGE, first - PAGE + 1]))
    min_addr = draw(st.sampled_from([0, near]))
    return start, size, load, align, min_addr, max_addr, mem_min, mem_max


@settings(max_examples=400, deadline=None)
@given(region_cases())
# An image (and its boot-information page) that exactly fills the crash region.
@example((256 * MiB, 2 * MiB + PAGE, 2 * MiB, PAGE, 0, None, None, None))
@example((256 * MiB, 2 * MiB + PAGE - 1, 2 * MiB, PAGE, 0, None, None, None))
@example((256 * MiB, 4 * MiB, 2 * MiB, 2 * MiB, 0, None, None, 260 * MiB - 1))
# The same with the image's max_addr: at the image's last byte, and one short.
@example((256 * MiB, 4 * MiB, 2 * MiB, 2 * MiB, 0, 260 * MiB - 1, None, None))
@example((256 * MiB, 4 * MiB, 2 * MiB, 2 * MiB, 0, 260 * MiB - 2, None, None))
def test_crash_and_default_placement_is_the_lowest_that_fits(case):
    start, size, load, align = case[:4]
    for kind in ("crash", "default"):
        try:
            p = plan_in_region(kind, start, size, load, align, min_addr=case[4],
                               max_addr=case[5], mem_min=case[6], mem_max=case[7])
            got = p.image_start
            assert p.bootinfo_addr == got - PAGE and p.image_end == got + load
        except WindowError:
            got = None
        assert got == oracle_region(*case), kind
