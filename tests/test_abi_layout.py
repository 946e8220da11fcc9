"""Our struct layouts and ABI numbers are Xen's: compiled against Debian's
libxen-dev headers and compared field by field."""
import re
import shutil
import subprocess

import pytest

from xen_public import abi
from xen_public._xen_abi import ffi

STRUCTS = {
    "xen_kexec_range_t": ["range", "nr", "size", "start"],
    "xen_kexec_segment_t": ["buf", "buf_size", "dest_maddr", "dest_size"],
    "xen_kexec_load_t": ["type", "_pad", "arch", "nr_segments", "segments", "entry_maddr"],
    "xen_kexec_exec_t": ["type"],
    "xen_kexec_unload_t": ["type"],
    "xen_kexec_status_t": ["type"],
    "privcmd_hypercall_t": ["op", "arg"],
    "multicall_entry_t": ["op", "result", "args"],
    "xen_memory_map_t": ["nr_entries", "buffer"],
}

CONSTANTS = [
    "__HYPERVISOR_kexec_op", "__HYPERVISOR_xen_version", "__HYPERVISOR_domctl",
    "__HYPERVISOR_sysctl",
    "KEXEC_CMD_kexec", "KEXEC_CMD_kexec_get_range", "KEXEC_CMD_kexec_load",
    "KEXEC_CMD_kexec_unload", "KEXEC_CMD_kexec_status",
    "KEXEC_TYPE_DEFAULT", "KEXEC_TYPE_CRASH",
    "KEXEC_RANGE_MA_CRASH", "KEXEC_RANGE_MA_XEN", "KEXEC_RANGE_MA_CPU",
    "KEXEC_RANGE_MA_XENHEAP", "KEXEC_RANGE_MA_BOOT_PARAM", "KEXEC_RANGE_MA_EFI_MEMMAP",
    "KEXEC_RANGE_MA_VMCOREINFO",
    "XENVER_version", "XENVER_extraversion", "XENVER_capabilities", "XENVER_pagesize",
    "XENVER_commandline", "XENVER_build_id", "__HYPERVISOR_memory_op", "XENMEM_maximum_ram_page",
    "__HYPERVISOR_multicall", "XENMEM_machine_memory_map",
    "DOMID_SELF", "DOMID_IO", "DOMID_XEN", "DOMID_COW", "DOMID_INVALID", "DOMID_IDLE",
]


# Every constant of these families in xen_public.abi is checked, so that one
# added later is held to Xen's header too: {python name: C expression}.
FAMILIES = (r"GTF_\w+", r"VIRQ_\w+", r"HVM_PARAM_\w+", r"HVM_NR_PARAMS", r"EVTCHN_FIFO_(PENDING|MASKED|LINKED)",
            r"DOMID_FIRST_RESERVED", r"EM_(386|X86_64)")
ERRNO = r"E[A-Z0-9]+"          # public/errno.h names them XEN_<name>


def _family_constants():
    names = {}
    for name in dir(abi):
        if not isinstance(getattr(abi, name), int):
            continue
        if re.fullmatch(ERRNO, name):
            names[name] = "XEN_" + name
        elif name.startswith("EVTCHN_FIFO_"):
            names[name] = "(1ULL << %s)" % name     # Xen names the bit, we keep the mask
        elif any(re.fullmatch(f, name) for f in FAMILIES):
            names[name] = name
    return names


FAMILY_CONSTANTS = _family_constants()


def _python_name(c_name):
    return c_name.replace("__HYPERVISOR_", "HYPERVISOR_")


@pytest.fixture(scope="module")
def xen_layout(xen_artifacts, tmp_path_factory):
    """{name: value} printed by a C program built against Xen's headers."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to check struct layouts"
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <stdint.h>',
             '#include <sys/ioctl.h>', '#include <xen/xen.h>', '#include <xen/kexec.h>',
             '#include <xen/version.h>', '#include <xen/sys/privcmd.h>',
             '#include <xen/hvm/ioreq.h>', '#include <xen/memory.h>',
             '#include <xen/grant_table.h>', '#include <xen/event_channel.h>',
             '#include <xen/hvm/params.h>', '#include <xen/errno.h>', '#include <elf.h>',
             '#include <xen/io/ring.h>',
             'int main(void) {']
    for struct, fields in STRUCTS.items():
        lines.append('printf("sizeof %s %%zu\\n", sizeof(%s));' % (struct, struct))
        for f in fields:
            lines.append('printf("offsetof %s.%s %%zu\\n", offsetof(%s, %s));' % (struct, f, struct, f))
    for c in CONSTANTS:
        lines.append('printf("const %s %%lld\\n", (long long)(%s));' % (c, c))
    for name, c in FAMILY_CONSTANTS.items():
        lines.append('printf("family %s %%lld\\n", (long long)(%s));' % (name, c))
    lines.append('printf("const IOCTL_PRIVCMD_HYPERCALL %lld\\n", (long long)IOCTL_PRIVCMD_HYPERCALL);')
    for field in ("evtchn_pending", "evtchn_mask"):
        lines.append('printf("shinfo %s %%zu\\n", offsetof(struct shared_info, %s));' % (field, field))
    lines.append('printf("shinfo vcpu_info_size %zu\\n", sizeof(struct vcpu_info));')
    lines.append('printf("shinfo nr_2l_channels %zu\\n", '
                 '8 * sizeof(((struct shared_info *)0)->evtchn_pending));')
    lines.append('printf("const XEN_PAGE_SHIFT %d\\n", XEN_PAGE_SHIFT);')
    lines.append('printf("shinfo pending_sel %zu\\n", offsetof(struct vcpu_info, evtchn_pending_sel));')
    lines.append('printf("shinfo ioreq_size %zu\\n", sizeof(struct ioreq));')
    lines.append('printf("shinfo ioreq_vp_eport %zu\\n", offsetof(struct ioreq, vp_eport));')
    lines.append("return 0; }")
    d = tmp_path_factory.mktemp("abi")
    src, exe = d / "layout.c", d / "layout"
    src.write_text("\n".join(lines) + "\n")
    # xen/sys/privcmd.h uses domid_t and xen_pfn_t from xen.h, as libxencall does.
    subprocess.run([cc, "-D__XEN_TOOLS__", "-I", str(xen_artifacts.include), str(src), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for _, k, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("struct", sorted(STRUCTS))
def test_struct_size_and_offsets_equal_xens(xen_layout, struct):
    assert ffi.sizeof(struct) == xen_layout[struct]
    for f in STRUCTS[struct]:
        assert ffi.offsetof(struct, f) == xen_layout["%s.%s" % (struct, f)], f


def test_range_struct_is_24_bytes_on_x86_64(xen_layout):
    # The design's facts table; a wrong compiler flag would show here first.
    assert xen_layout["xen_kexec_range_t"] == 24


@pytest.mark.parametrize("name", CONSTANTS)
def test_constants_equal_xens(xen_layout, name):
    assert getattr(abi, _python_name(name)) == xen_layout[name]


@pytest.mark.parametrize("name", sorted(FAMILY_CONSTANTS))
def test_flag_irq_param_and_errno_values_equal_xens(xen_layout, name):
    assert getattr(abi, name) == xen_layout[name]


def test_every_family_is_checked():
    # A family that matched nothing would check nothing.
    for family in FAMILIES + (ERRNO,):
        assert any(re.fullmatch(family, n) for n in FAMILY_CONSTANTS), family
    assert {"GTF_reading", "GTF_writing", "EADDRNOTAVAIL", "HVM_PARAM_NESTEDHVM"} \
        <= set(FAMILY_CONSTANTS)


def test_segment_limit_is_the_kexec_abis(tmp_path):
    """Xen's limit on segments per image lives in its private kimage.h, not
    in the public headers; it is the kexec ABI's, which Linux's uapi header
    (linux-libc-dev) carries: the same 16 that kexec-tools builds against."""
    src, exe = tmp_path / "segmax.c", tmp_path / "segmax"
    src.write_text('#include <stdio.h>\n#include <linux/kexec.h>\n'
                   'int main(void) { printf("%d\\n", KEXEC_SEGMENT_MAX); return 0; }\n')
    subprocess.run([shutil.which("cc"), str(src), "-o", str(exe)], check=True,
                   capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    assert abi.KEXEC_SEGMENT_MAX == int(out)


def test_privcmd_ioctl_number(xen_layout):
    # _IOC(_IOC_NONE, 'P', 0, sizeof(privcmd_hypercall_t)): for the real /dev/xen/privcmd.
    assert xen_layout["IOCTL_PRIVCMD_HYPERCALL"] == (ffi.sizeof("privcmd_hypercall_t") << 16) | (ord("P") << 8)


def test_live_update_additions_follow_the_design():
    # Not in Xen 4.17's header: the seed patches add them after the last range/type.
    assert abi.KEXEC_RANGE_MA_LIVEUPDATE == abi.KEXEC_RANGE_MA_VMCOREINFO + 1 == 7
    assert abi.KEXEC_TYPE_LIVEUPDATE == abi.KEXEC_TYPE_CRASH + 1 == 2
    assert abi.LU_BREADCRUMB_MAGIC.to_bytes(8, "big")[:6] == b"LiveUp"
    assert abi.LU_BREADCRUMB_MAGIC % abi.PAGE_SIZE == 0


def test_pages_are_xens(xen_layout):
    assert abi.PAGE_SHIFT == xen_layout["XEN_PAGE_SHIFT"] == 12
    assert abi.PAGE_SIZE == 1 << xen_layout["XEN_PAGE_SHIFT"]
    assert 0xFFFF82D040201FFF & abi.PAGE_MASK == 0xFFFF82D040201000


def test_two_level_channels_are_as_many_as_shared_info_has_pending_bits(xen_layout):
    assert abi.EVTCHN_2L_NR_CHANNELS == xen_layout["nr_2l_channels"] == 4096


def test_event_channel_bits_sit_where_xen_puts_them(xen_layout):
    # The C core sets pending bits in guest memory at these offsets.
    assert abi.SHINFO_EVTCHN_PENDING == xen_layout["evtchn_pending"]
    assert abi.SHINFO_EVTCHN_MASK == xen_layout["evtchn_mask"]
    assert xen_layout["vcpu_info_size"] == 64 and xen_layout["pending_sel"] == 8


def test_ioreq_layout_is_xens(xen_layout):
    from hyperv_sim._lu_core import ffi as core_ffi
    assert core_ffi.sizeof("struct lu_ioreq") == xen_layout["ioreq_size"] == 32
    assert core_ffi.offsetof("struct lu_ioreq", "vp_eport") == xen_layout["ioreq_vp_eport"]
