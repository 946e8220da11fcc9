"""Xen's public ABI numbers, in one place.

Values are Xen's own (xen/include/public/xen.h, kexec.h, version.h) plus the
live-update additions of the design (KEXEC_TYPE_LIVEUPDATE,
KEXEC_RANGE_MA_LIVEUPDATE).  Struct layouts are not here: they live in
csrc/xen_abi.h and reach Python only through cffi (xen_public._xen_abi).
"""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

# Hypercall numbers (public/xen.h).
HYPERVISOR_memory_op = 12
HYPERVISOR_multicall = 13
HYPERVISOR_xen_version = 17
HYPERVISOR_sysctl = 35
HYPERVISOR_domctl = 36
HYPERVISOR_kexec_op = 37

# kexec_op commands (public/kexec.h).
KEXEC_CMD_kexec = 0
KEXEC_CMD_kexec_get_range = 3
KEXEC_CMD_kexec_load = 4
KEXEC_CMD_kexec_unload = 5
KEXEC_CMD_kexec_status = 6

# Image types.
KEXEC_TYPE_DEFAULT = 0
KEXEC_TYPE_CRASH = 1
KEXEC_TYPE_LIVEUPDATE = 2
KEXEC_TYPES = {
    "default": KEXEC_TYPE_DEFAULT,
    "crash": KEXEC_TYPE_CRASH,
    "liveupdate": KEXEC_TYPE_LIVEUPDATE,
}
KEXEC_TYPE_NAMES = {v: k for k, v in KEXEC_TYPES.items()}

# get_range ranges.
KEXEC_RANGE_MA_CRASH = 0
KEXEC_RANGE_MA_XEN = 1
KEXEC_RANGE_MA_CPU = 2
KEXEC_RANGE_MA_XENHEAP = 3
KEXEC_RANGE_MA_BOOT_PARAM = 4
KEXEC_RANGE_MA_EFI_MEMMAP = 5
KEXEC_RANGE_MA_VMCOREINFO = 6
KEXEC_RANGE_MA_LIVEUPDATE = 7
KEXEC_RANGES = {
    "crash": KEXEC_RANGE_MA_CRASH,
    "xen": KEXEC_RANGE_MA_XEN,
    "cpu": KEXEC_RANGE_MA_CPU,
    "xenheap": KEXEC_RANGE_MA_XENHEAP,
    "boot_param": KEXEC_RANGE_MA_BOOT_PARAM,
    "efi_memmap": KEXEC_RANGE_MA_EFI_MEMMAP,
    "vmcoreinfo": KEXEC_RANGE_MA_VMCOREINFO,
    "liveupdate": KEXEC_RANGE_MA_LIVEUPDATE,
}
KEXEC_RANGE_NAMES = {v: k for k, v in KEXEC_RANGES.items()}

# Xen's limit on segments per image (xen/include/xen/kimage.h).
KEXEC_SEGMENT_MAX = 16

# xen_kexec_load_t.arch takes ELF machine numbers.
EM_386 = 3
EM_X86_64 = 62

# memory_op sub-ops (public/memory.h).
XENMEM_maximum_ram_page = 2
XENMEM_machine_memory_map = 10

# E820 entry types (the machine memory map: 20-byte packed entries,
# u64 addr, u64 size, u32 type).
E820_RAM = 1
E820_RESERVED = 2
E820_ENTRY_SIZE = 20

# xen_version sub-ops (public/version.h).
XENVER_version = 0
XENVER_extraversion = 1
XENVER_capabilities = 3
XENVER_pagesize = 7
XENVER_commandline = 9
XENVER_build_id = 10
# xen_extraversion_t: char[16], NUL-terminated.
XEN_EXTRAVERSION_LEN = 16


def version_text(major, minor, extra):
    """Xen's version as xl info's xen_version prints it: "4.17.3-pre"."""
    return "%d.%d%s" % (major, minor, extra)

# Reserved domain ids (public/xen.h).
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_IO = 0x7FF1
DOMID_XEN = 0x7FF2
DOMID_COW = 0x7FF3
DOMID_INVALID = 0x7FF4
DOMID_IDLE = 0x7FFF

# Xen's errno values (public/errno.h; equal to Linux's on x86).
EPERM = 1
ENOENT = 2
ESRCH = 3
E2BIG = 7
EAGAIN = 11
ENOMEM = 12
EFAULT = 14
EBUSY = 16
EEXIST = 17
EINVAL = 22
ENOSPC = 28
ERANGE = 34
ENOSYS = 38
EOPNOTSUPP = 95
EOVERFLOW = 75
EADDRNOTAVAIL = 99
EIO = 5
ENOEXEC = 8
ENODEV = 19

# The live-update breadcrumb magic: "LiveUpda" with the page bits cleared.
LU_BREADCRUMB_MAGIC = 0x4C69766555706461 & PAGE_MASK

# Grant table entry flags (public/grant_table.h).
GTF_permit_access = 1 << 0
GTF_readonly = 1 << 2
GTF_reading = 1 << 3
GTF_writing = 1 << 4

# Virtual IRQs (public/xen.h).
VIRQ_TIMER = 0
VIRQ_DEBUG = 1
VIRQ_CONSOLE = 2
VIRQ_DOM_EXC = 3

# HVM parameters (public/hvm/params.h).
HVM_PARAM_CALLBACK_IRQ = 0
HVM_PARAM_STORE_PFN = 1
HVM_PARAM_STORE_EVTCHN = 2
HVM_PARAM_PAE_ENABLED = 4
HVM_PARAM_IOREQ_PFN = 5
HVM_PARAM_BUFIOREQ_PFN = 6
HVM_PARAM_VIRIDIAN = 9
HVM_PARAM_TIMER_MODE = 10
HVM_PARAM_HPET_ENABLED = 11
HVM_PARAM_IDENT_PT = 12
HVM_PARAM_CONSOLE_PFN = 17
HVM_PARAM_CONSOLE_EVTCHN = 18
HVM_PARAM_ACPI_IOPORTS_LOCATION = 19
HVM_PARAM_NESTEDHVM = 24
HVM_PARAM_PAGING_RING_PFN = 27
HVM_PARAM_MONITOR_RING_PFN = 28
HVM_PARAM_SHARING_RING_PFN = 29
HVM_PARAM_IOREQ_SERVER_PFN = 32
HVM_PARAM_NR_IOREQ_SERVER_PAGES = 33
HVM_PARAM_VM_GENERATION_ID_ADDR = 34
HVM_PARAM_X87_FIP_WIDTH = 36
HVM_PARAM_VM86_TSS_SIZED = 37
HVM_PARAM_MCA_CAP = 38
HVM_NR_PARAMS = 39

# struct shared_info on x86-64: 32 vcpu_info of 64 bytes, then the 2-level
# event channel bitmaps.
SHINFO_EVTCHN_PENDING = 2048
SHINFO_EVTCHN_MASK = 2560
EVTCHN_2L_NR_CHANNELS = 64 * 64
# FIFO event words (public/event_channel.h).
EVTCHN_FIFO_PENDING = 1 << 31
EVTCHN_FIFO_MASKED = 1 << 30
EVTCHN_FIFO_LINKED = 1 << 29
