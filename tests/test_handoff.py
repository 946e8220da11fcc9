"""What xen#2 is entered with, checked by xen#1's pre-flight exactly as
xen#2 would check it: loads that xen#2 could not boot from, crafted here
with the raw client, are refused before any domain is paused, and nothing
on the host changes.  Xen's command-line rule (cmdline_cook) written out."""
import pytest

from hyperv_sim.entry import cook_cmdline
from kexec_lu.errors import KexecLuError
from kexec_lu.image import load_image
from kexec_lu.liveupdate import run_live_update
from kexec_lu.loader import plan_load
from xen_public import abi, bootinfo

PAGE = abi.PAGE_SIZE


@pytest.mark.parametrize("raw, loader, kept", [
    ("xen.gz dom0_mem=1G", "kexec 2.0.25", "dom0_mem=1G"),
    ("  xen.gz   dom0_mem=1G", "hyperv-sim boot", "dom0_mem=1G"),
    ("liveupdate=64M@0x1000 a=1", "kexec-lu", "a=1"),          # the first word goes, whatever it is
    ("dom0_mem=1G", "GRUB 2.06", "dom0_mem=1G"),               # GRUB 2 puts no name there
    ("xen.gz dom0_mem=1G", "GNU GRUB 0.97", "dom0_mem=1G"),    # GRUB 1 does
    ("xen.gz", "unknown", ""),
])
def test_xen_drops_the_image_name_unless_the_loader_is_grub2(raw, loader, kept):
    assert cook_cmdline(raw, loader) == kept


def _plan(host, sim_images):
    c = host.client
    ranges = {r: c.get_range(r) for r in (abi.KEXEC_RANGE_MA_LIVEUPDATE, abi.KEXEC_RANGE_MA_XEN)}
    return plan_load(load_image(str(sim_images["4.19"])), abi.KEXEC_TYPE_LIVEUPDATE, ranges, "")


def _refused(host, segments, entry):
    c = host.client
    incarnation = host.toolstack("info")["incarnation"]
    c.kexec_load(abi.KEXEC_TYPE_LIVEUPDATE, abi.EM_X86_64, entry, segments)
    with pytest.raises(KexecLuError) as e:
        run_live_update(c, timeout=30)
    assert host.toolstack("lu-report")["state"] == "refused"
    assert host.toolstack("info")["incarnation"] == incarnation
    assert host.toolstack("verify")["ok"]
    return str(e.value)


def _with_page(plan, **page):
    """The plan's segments with its boot page rebuilt from `page`."""
    args = dict(eip=plan.eip, cmdline=plan.cmdline, load_base_addr=plan.placement.image_start,
                mem_lower_kib=640, mem_upper_kib=0, loader_name="kexec-lu", image="xen-4.19.gz")
    args.update(page)
    built = bootinfo.build_page(plan.entry, **args)
    return [(built if dest == plan.entry else data, dest, size) for data, dest, size in plan.segments]


def test_a_command_line_without_this_hosts_bootmem_is_refused(host, sim_images):
    plan = _plan(host, sim_images)
    lu_start = host.toolstack("info")["lu_bootmem"]["start"]
    msg = _refused(host, _with_page(plan, cmdline="dom0_mem=256M"), plan.entry)
    assert ("xen#2's command line has no liveupdate=SIZE@BASE, not this host's LU bootmem at "
            "0x%x: it would boot afresh instead of restoring" % lu_start) in msg


def test_liveupdate_as_the_first_word_is_refused_and_says_why(host, sim_images):
    """What kexec-lu wrote before it put the image's name first."""
    plan = _plan(host, sim_images)
    msg = _refused(host, _with_page(plan, image=plan.cmdline, cmdline=""), plan.entry)
    assert "its liveupdate= is the first word, which Xen drops as the image's name" in msg


def test_a_hand_off_xen2_cannot_read_is_refused(host, sim_images):
    plan = _plan(host, sim_images)
    segs = [(bytes(PAGE) if dest == plan.entry else data, dest, size)
            for data, dest, size in plan.segments]
    msg = _refused(host, segs, plan.entry)
    assert "xen#2 could not boot from this load: no boot information at entry 0x%x" % plan.entry \
        in msg


def test_an_entry_point_without_the_image_is_refused(host, sim_images):
    plan = _plan(host, sim_images)
    msg = _refused(host, _with_page(plan, eip=plan.eip + PAGE), plan.entry)
    assert "no multiboot2 header at the entry point 0x%x" % (plan.eip + PAGE) in msg


def test_an_image_longer_than_its_segment_is_refused(host, sim_images):
    """Its IMAGE note says more than the load reserved: the rest would land
    on frames nobody reserved."""
    plan = _plan(host, sim_images)
    image_start = plan.placement.image_start
    segs = []
    for data, dest, size in plan.segments:
        if dest == image_start:
            size -= PAGE
            data = data[:size]
        segs.append((data, dest, size))
    msg = _refused(host, segs, plan.entry)
    assert "xen#2's image [0x%x, " % image_start in msg
    assert "is not inside one loaded segment" in msg


def test_bootmem_over_xen2s_own_image_is_refused(host, sim_images):
    plan = _plan(host, sim_images)
    lu_start = host.toolstack("info")["lu_bootmem"]["start"]
    image_start = plan.placement.image_start
    size_mib = (image_start - lu_start) // (1 << 20) + 1
    line = "liveupdate=%dM@0x%x" % (size_mib, lu_start)
    msg = _refused(host, _with_page(plan, cmdline=line), plan.entry)
    assert "overlaps this hypervisor's own image at 0x%x" % image_start in msg


def _purgatory_segments(plan, mbi_at, data_at=None):
    """kexec-tools' form of the hand-off, built by hand: at the entry a page
    with an entry32_regs block (EAX = the multiboot2 magic, EBX = the MBI,
    EIP = the image's entry) 0x48 bytes in; the MBI at mbi_at, in its own
    page or, with data_at = the image segment's start, inside the image."""
    import struct
    from xen_public import multiboot2
    regs = struct.pack("<8IQ", multiboot2.MB2_BOOTLOADER_MAGIC, mbi_at, 0, 0, 0, 0, 0, 0, plan.eip)
    purgatory = (b"\x90" * 0x48 + regs).ljust(PAGE, b"\0")
    mbi = multiboot2.encode_mbi(cmdline="xen-4.19.gz " + plan.cmdline, loader_name="kexec 2.0.25",
                                load_base_addr=plan.entry, mem_lower_kib=639, mem_upper_kib=0)
    segs = []
    for data, dest, size in plan.segments:
        if dest == plan.entry:
            data = purgatory
        elif data_at is not None and dest == data_at:
            off = mbi_at - dest
            data = bytes(data).ljust(off, b"\0")[:off] + mbi
        segs.append((data, dest, size))
    if data_at is None:
        segs.append((mbi, mbi_at, PAGE))
    return sorted(segs, key=lambda s: s[1])


def test_kexec_tools_hand_off_is_booted(host, sim_images):
    """The purgatory's registers, not a boot page, at the entry: xen#2
    boots from them and restores (the command line's first word dropped)."""
    from helpers import wait_for
    plan = _plan(host, sim_images)
    c = host.client
    incarnation = host.toolstack("info")["incarnation"]
    c.kexec_load(abi.KEXEC_TYPE_LIVEUPDATE, abi.EM_X86_64, plan.entry + 0x20,
                 _purgatory_segments(plan, plan.entry - PAGE))
    rep = run_live_update(c, timeout=60)
    assert rep["state"] == "complete", rep
    info = host.toolstack("info")
    assert (info["xen_version"], info["cmdline"]) == ("4.19.0", plan.cmdline)
    assert info["incarnation"] != incarnation
    wait_for(lambda: host.toolstack("verify")["ok"], "verify to hold")


def test_an_image_over_its_boot_information_is_refused(host, sim_images):
    plan = _plan(host, sim_images)
    image_start = plan.placement.image_start
    mbi_at = image_start + (2 << 20)
    msg = _refused(host, _purgatory_segments(plan, mbi_at, data_at=image_start), plan.entry + 0x20)
    assert "xen#2's image [0x%x, " % image_start in msg
    assert "overlaps its boot information at [0x%x, " % mbi_at in msg
