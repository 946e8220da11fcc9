"""The live-update stream's public vocabulary: versions and record types.

Framing follows Xen's migration stream v3 (docs/specs/libxc-migration-stream):
big-endian image header, then records {u32 type, u32 body_length, body padded
to 8 bytes}.  Bit 31 of a type marks an optional record; bit 30 marks the
record types that exist only in a live-update stream.  The numbers here are
the contract between xen#1 and xen#2 and between an image and the stream
versions/records its notes say it can restore; see kexec-lu-stream(5).
"""

# Image header.
STREAM_MARKER = 0xFFFFFFFFFFFFFFFF
STREAM_ID = 0x58454E46  # "XENF"
STREAM_VERSION = 3

# The live-update format version carried in the LU_VERSION record.
LU_FORMAT_VERSION = 1

REC_OPTIONAL = 0x80000000
REC_LU_ONLY = 0x40000000

# Migration stream v3 record types that a live-update stream reuses.
REC_END = 0x00000000
REC_X86_PV_INFO = 0x00000002
REC_X86_PV_VCPU_BASIC = 0x00000004
REC_SHARED_INFO = 0x00000007
REC_X86_TSC_INFO = 0x00000008
REC_HVM_CONTEXT = 0x00000009
REC_HVM_PARAMS = 0x0000000A

# Live-update-only record types.
REC_LU_VERSION = 0x40000000
REC_LU_DOMAIN = 0x40000001
REC_LU_P2M_EXTENTS = 0x40000002
REC_LU_PAGE_OWNERSHIP = 0x40000003
REC_LU_PV_PAGE_TYPES = 0x40000004
REC_LU_GRANT_TABLE = 0x40000005
REC_LU_EVTCHN_ABI = 0x40000006
REC_LU_EVTCHN_PORTS = 0x40000007
REC_LU_EVTCHN_FIFO = 0x40000008
REC_LU_GRANT_MAPS = 0x40000009
REC_LU_IOREQ_SERVER = 0x4000000A
REC_LU_IOMMU = 0x4000000B
REC_LU_M2P = 0x4000000C
REC_LU_XEN_REGIONS = 0x4000000D
REC_LU_VCPU_STATE = 0x4000000E
REC_LU_WORKLOAD = 0x4000000F

RECORD_NAMES = {
    value: name[len("REC_"):]
    for name, value in globals().items()
    if name.startswith("REC_") and name not in ("REC_OPTIONAL", "REC_LU_ONLY")
}

# What an image built today can restore (hyperv-sim mkimage's default).
ALL_RECORD_TYPES = tuple(sorted(RECORD_NAMES))


def record_name(rtype):
    """Human name of a record type, with the optional bit shown."""
    base = rtype & ~REC_OPTIONAL
    name = RECORD_NAMES.get(base, "UNKNOWN_0x%08x" % base)
    return name + ("|OPTIONAL" if rtype & REC_OPTIONAL else "")
