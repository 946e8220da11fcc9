"""From image and ranges to kexec segments: command line, boot info page,
payload, and the refusals a multiboot2 Xen loader must make."""
import pytest

from hyperv_sim.bootline import BootLineError, parse
from hyperv_sim.mkimage import write_image
from xen_public import abi, bootinfo
from kexec_lu.errors import ImageError
from xen_public.errors import FormatError
from kexec_lu.image import load_image
from kexec_lu.loader import compose_cmdline, plan_load, remove_parameter
from xen_public.units import MiB

XEN_START = 0xFFC00000
RANGES = {abi.KEXEC_RANGE_MA_LIVEUPDATE: (XEN_START - 64 * MiB, 64 * MiB),
          abi.KEXEC_RANGE_MA_XEN: (XEN_START, 3 * MiB),
          abi.KEXEC_RANGE_MA_CRASH: (0x20000000, 128 * MiB)}


def test_reused_command_line_loses_the_old_liveupdate_for_a_live_update():
    line = compose_cmdline(abi.KEXEC_TYPE_LIVEUPDATE, reused="console=com1 liveupdate=64M dom0_mem=1G",
                           append="loglvl=all")
    assert line == "console=com1 dom0_mem=1G loglvl=all"


def test_reused_command_line_loses_crashkernel_for_a_crash_image():
    assert compose_cmdline(abi.KEXEC_TYPE_CRASH, reused="crashkernel=256M dom0_mem=1G") == "dom0_mem=1G"
    assert compose_cmdline(abi.KEXEC_TYPE_DEFAULT, given="a=1", append="b") == "a=1 b"
    assert remove_parameter("liveupdatex=1 liveupdate=3M", "liveupdate") == "liveupdatex=1"


def test_liveupdate_plan_hands_xen2_its_bootmem_and_entry(sim_images):
    img = load_image(str(sim_images["4.19"]))
    plan = plan_load(img, abi.KEXEC_TYPE_LIVEUPDATE, RANGES, "dom0_mem=1G")
    p = plan.placement
    assert plan.cmdline == "dom0_mem=1G liveupdate=64M@0x%x" % (XEN_START - 64 * MiB)
    assert p.image_start == XEN_START
    # Every segment page-aligned, inside the window, above the breadcrumb page.
    for data, dest, size in plan.segments:
        assert dest % abi.PAGE_SIZE == 0 and size % abi.PAGE_SIZE == 0 and len(data) <= size
        assert p.breadcrumb_addr + abi.PAGE_SIZE <= dest and dest + size <= p.region_end
    pages = {dest: data for data, dest, _ in plan.segments}
    info = bootinfo.parse_page(pages[plan.entry], plan.entry)
    assert info.eip == plan.eip == XEN_START + (img.entry - img.load_start)
    assert info.load_base_addr == XEN_START
    # The image's name first, as kexec-tools writes it: Xen drops that word
    # (cmdline_cook) from every loader but GRUB 2.
    assert info.cmdline == "xen-4.19.gz " + plan.cmdline
    assert info.loader_name == "kexec-lu"
    assert pages[XEN_START] == img.loaded_bytes()[:len(pages[XEN_START])]
    # The new bootmem parses as xen#2 will parse it.
    opts = parse(plan.cmdline)
    assert (opts.liveupdate_base, opts.liveupdate_size) == (p.bootmem_start, p.bootmem_size)


def test_real_debian_xen_fits_with_a_smaller_bootmem(xen_artifacts):
    img = load_image(str(xen_artifacts.xen_gz))
    plan = plan_load(img, abi.KEXEC_TYPE_LIVEUPDATE, RANGES, "")
    assert plan.placement.image_start == XEN_START - 2 * MiB      # 0x3a7000 does not fit in 3 MiB
    assert plan.placement.bootmem_size == 62 * MiB
    assert plan.cmdline == "liveupdate=62M@0x%x" % (XEN_START - 64 * MiB)


def test_xen_syms_is_not_a_multiboot2_image(xen_artifacts):
    with pytest.raises(ImageError, match="no multiboot2 header"):
        plan_load(load_image(str(xen_artifacts.xen_syms)), abi.KEXEC_TYPE_LIVEUPDATE, RANGES, "")


def test_live_update_needs_the_relocatable_tag(tmp_path):
    path = tmp_path / "fixed.gz"
    write_image(str(path), xen_version="4.19", relocatable=False)
    img = load_image(str(path))
    with pytest.raises(ImageError, match="relocatable tag"):
        plan_load(img, abi.KEXEC_TYPE_LIVEUPDATE, RANGES, "")


def test_crash_plan_stays_in_the_crash_region(sim_images):
    plan = plan_load(load_image(str(sim_images["4.18"])), abi.KEXEC_TYPE_CRASH, RANGES, "")
    lo, size = RANGES[abi.KEXEC_RANGE_MA_CRASH]
    assert all(lo <= dest and dest + n <= lo + size for _, dest, n in plan.segments)


def test_command_line_too_long_for_the_boot_page(sim_images):
    with pytest.raises(FormatError, match="command line too long"):
        plan_load(load_image(str(sim_images["4.18"])), abi.KEXEC_TYPE_LIVEUPDATE, RANGES, "x" * 5000)


@pytest.mark.parametrize("line, words", [
    ("liveupdate=banana", "liveupdate"),
    ("liveupdate=1500K", "whole number of MiB"),
    ("liveupdate", "needs a value"),
    ("dom0_max_vcpus=0", "between"),
    ("crashkernel=12Q", "crashkernel"),
    ('console="unterminated', "command line"),
    ("lu_stop=scrub", "lu_stop=scrub: not one of xen#2's points .*unpause, frametable-deferred"),
])
def test_boot_line_errors_name_the_option(line, words):
    with pytest.raises(BootLineError, match=words):
        parse(line)


def test_boot_line_sizes_default_to_kib_like_xen():
    opts = parse("liveupdate=65536 dom0_mem=1G crashkernel=256M@0x20000000 nr_cpus=4 com1=115200")
    assert opts.liveupdate_size == 64 * MiB and opts.liveupdate_base is None
    assert opts.dom0_mem == 1024 * MiB
    assert (opts.crash_size, opts.crash_base) == (256 * MiB, 0x20000000)
    assert opts.nr_cpus == 4 and opts.unknown == []
    assert parse("liveupdate=62M@0xfbc00000").liveupdate_base == 0xFBC00000


def test_lu_stop_takes_the_deferred_rebuild_too():
    assert parse("lu_stop=frametable-deferred").lu_stop == "frametable-deferred"
    assert parse("lu_stop=restore-pass1").lu_stop == "restore-pass1"
