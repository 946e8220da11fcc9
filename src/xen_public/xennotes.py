"""ELF notes a Xen image carries, and how to find them in raw bytes.

Two owners matter: "GNU" (NT_GNU_BUILD_ID) and our own "XenLU", which says
what a hypervisor image is and what live-update streams it can restore.
Real Debian Xen images have only the GNU note.  The "XenLU" notes sit inside
the first 32 KiB of the loaded image so that a hypervisor that was just
jumped to can read its own personality from RAM, without any ELF header.

XenLU note types (all little-endian):
  XENLU_NOTE_VERSION  u32 major, u32 minor, extra version (NUL-terminated)
  XENLU_NOTE_STREAM   u32 min_version, u32 max_version, u32 nr, u32 types[nr]
                      (live-update stream versions and record types restorable)
  XENLU_NOTE_IMAGE    u64 image_size: _end - _start of the loaded image
"""
import struct

from .errors import FormatError

GNU_OWNER = b"GNU"
NT_GNU_BUILD_ID = 3

XENLU_OWNER = b"XenLU"
XENLU_NOTE_VERSION = 1
XENLU_NOTE_STREAM = 2
XENLU_NOTE_IMAGE = 3

# How far into the loaded image the personality notes may sit.
PERSONALITY_WINDOW = 32 * 1024


def _align4(n):
    return (n + 3) & ~3


def encode_note(owner, ntype, desc):
    """One ELF note: {namesz, descsz, type}, name, desc, each 4-aligned."""
    name = owner + b"\0"
    return (struct.pack("<III", len(name), len(desc), ntype)
            + name.ljust(_align4(len(name)), b"\0")
            + desc.ljust(_align4(len(desc)), b"\0"))


def encode_version(major, minor, extra):
    return struct.pack("<II", major, minor) + extra.encode() + b"\0"


def decode_version(desc):
    if len(desc) < 9:
        raise FormatError("XenLU version note is %d bytes, need at least 9" % len(desc))
    major, minor = struct.unpack_from("<II", desc)
    extra = desc[8:].split(b"\0", 1)[0].decode("ascii", "replace")
    return major, minor, extra


def encode_stream(min_version, max_version, record_types):
    types = sorted(set(record_types))
    return struct.pack("<III%dI" % len(types), min_version, max_version, len(types), *types)


def decode_stream(desc):
    if len(desc) < 12:
        raise FormatError("XenLU stream note is %d bytes, need at least 12" % len(desc))
    lo, hi, nr = struct.unpack_from("<III", desc)
    if 12 + 4 * nr > len(desc):
        raise FormatError("XenLU stream note lists %d record types but holds %d bytes"
                         % (nr, len(desc)))
    return lo, hi, struct.unpack_from("<%dI" % nr, desc, 12)


def encode_image(image_size):
    return struct.pack("<Q", image_size)


def decode_image(desc):
    if len(desc) < 8:
        raise FormatError("XenLU image note is %d bytes, need 8" % len(desc))
    return struct.unpack_from("<Q", desc)[0]


def iter_notes(data, offset=0, end=None):
    """Yield (owner, type, desc) for a packed run of notes.

    Stops quietly at the first header that does not describe a note fitting
    in the buffer: callers pass exactly the PT_NOTE bytes, or a window of raw
    memory found with find_xenlu_notes().
    """
    end = len(data) if end is None else min(end, len(data))
    while offset + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", data, offset)
        name_off = offset + 12
        desc_off = name_off + _align4(namesz)
        next_off = desc_off + _align4(descsz)
        if namesz == 0 or namesz > 64 or next_off > end:
            return
        owner = bytes(data[name_off:name_off + namesz]).rstrip(b"\0")
        yield owner, ntype, bytes(data[desc_off:desc_off + descsz])
        offset = next_off


def find_xenlu_notes(memory):
    """Find the XenLU notes in the first 32 KiB of a loaded image.

    Returns {type: desc}; empty if the image carries no XenLU notes.
    """
    window = bytes(memory[:PERSONALITY_WINDOW])
    needle = struct.pack("<I", len(XENLU_OWNER) + 1)
    pos = 0
    while True:
        pos = window.find(XENLU_OWNER + b"\0", pos)
        if pos < 0:
            return {}
        start = pos - 12
        if start >= 0 and window[start:start + 4] == needle:
            # XenLU notes are written contiguously: decode forward from the first.
            found = {}
            for owner, ntype, desc in iter_notes(window, start):
                if owner != XENLU_OWNER:
                    break
                found[ntype] = desc
            if found:
                return found
        pos += 1
