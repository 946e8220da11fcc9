"""The live-update stream's public vocabulary: versions and record types.

Framing follows Xen's migration stream v3 (docs/specs/libxc-migration-stream):
big-endian image header, then records {u32 type, u32 body_length, body padded
to 8 bytes}.  Bit 31 of a type marks an optional record (one a restorer may
skip); bit 30 marks the record types that exist only in a live-update stream.
The numbers here are the contract between xen#1 and xen#2, and between an
image and the record types its notes say it can restore; body layouts are in
kexec-lu-stream(5) and xen_public/lurecords.py.
"""

# Image header.
STREAM_MARKER = 0xFFFFFFFFFFFFFFFF
STREAM_ID = 0x58454E46  # "XENF"
STREAM_VERSION = 3

# The live-update format version carried in the LU_VERSION record (2: that
# record carries xen#1's extra version).
LU_FORMAT_VERSION = 2

REC_OPTIONAL = 0x80000000
REC_LU_ONLY = 0x40000000

# Migration stream v3 record types a live-update stream reuses.
REC_END = 0x00000000
REC_X86_PV_INFO = 0x00000002
REC_HVM_PARAMS = 0x0000000A

# Live-update-only record types.
REC_LU_VERSION = 0x40000000        # system: xen#1's version, format version
REC_LU_DOMAIN = 0x40000001         # pass 0: create the domain
REC_LU_P2M_EXTENTS = 0x40000002    # pass 0: gfn -> mfn extents
REC_LU_PAGE_OWNERSHIP = 0x40000003  # pass 1: frames the domain owns, as extents
REC_LU_PV_PAGE_TYPES = 0x40000004  # pass 1: PV page-table and GDT frames, per page
REC_LU_GRANT_TABLE = 0x40000005    # pass 1: grant-table frames
REC_LU_GRANT_STATUS = 0x40000006   # pass 1: grant v2 status frames
REC_LU_EVTCHN_PORTS = 0x40000007   # pass 2: bound ports
REC_LU_EVTCHN_FIFO = 0x40000008    # pass 2, before ports: the FIFO ABI's pages
REC_LU_GRANT_MAPS = 0x40000009     # pass 2: grants this domain maps (other domids)
REC_LU_IOREQ_SERVER = 0x4000000A   # pass 2: device model (a domid)
REC_LU_IOMMU = 0x4000000B          # pass 2: passthrough devices, IOMMU tables
REC_LU_M2P = 0x4000000C            # system: the machine-to-phys table, kept
REC_LU_XEN_REGIONS = 0x4000000D    # system: regions xen#2 may reuse or must keep
REC_LU_VCPU_STATE = 0x4000000E     # pass 2: registers, run state, step count
REC_LU_FOREIGN_MAPS = 0x4000000F   # pass 2: foreign pages this domain maps
REC_LU_TIMINGS = 0x40000010        # system, optional: xen#1's phase timings
REC_LU_HVM_PARAMS = 0x40000011     # pass 2: HVM parameters migration leaves to the toolstack
REC_LU_KEXEC_IMAGE = 0x40000012    # system: the loaded crash image, which xen#2 takes over

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
