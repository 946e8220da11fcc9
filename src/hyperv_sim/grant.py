"""Grant tables: entries in frames shared with the granting guest (they are
guest-visible state, kept with memory), and the maptrack of active mappings
(Xen-private: rebuilt from records after a live update).

v1 entries are {u16 flags, u16 domid, u32 frame}; v2 entries are
{u16 flags, u16 domid, u32 pad, u64 frame} with the reading/writing bits in
a separate status frame of u16s.
"""
import struct

from xen_public import abi
from xen_public.abi import PAGE_SIZE

V1 = struct.Struct("<HHI")
V2 = struct.Struct("<HHIQ")
STATUS = struct.Struct("<H")
FIRST_FREE_REF = 8      # refs 0-7 are reserved by guests (GNTTAB_NR_RESERVED_ENTRIES)


class GrantError(Exception):
    pass


class GrantMap:
    """One active mapping: `mapper` maps `ref` of `granter`."""

    def __init__(self, handle, mapper, granter, ref, writable, mfn):
        self.handle, self.mapper, self.granter = handle, mapper, granter
        self.ref, self.writable, self.mfn = ref, writable, mfn

    def describe(self):
        return dict(self.__dict__)


class GrantTable:
    def __init__(self, ram, version, frames, status_frames=()):
        if version not in (1, 2):
            raise GrantError("grant table version %r: 1 or 2" % version)
        self.ram = ram
        self.version = version
        self.frames = list(frames)
        self.status_frames = list(status_frames)
        self._entry = V1 if version == 1 else V2

    @property
    def nr_entries(self):
        return len(self.frames) * (PAGE_SIZE // self._entry.size)

    def _entry_addr(self, ref):
        if not 0 <= ref < self.nr_entries:
            raise GrantError("grant reference %d out of range (%d entries)" % (ref, self.nr_entries))
        per = PAGE_SIZE // self._entry.size
        return self.frames[ref // per] * PAGE_SIZE + (ref % per) * self._entry.size

    def _status_addr(self, ref):
        per = PAGE_SIZE // STATUS.size
        return self.status_frames[ref // per] * PAGE_SIZE + (ref % per) * STATUS.size

    def entry(self, ref):
        """(flags, domid, gfn), with v2's status bits folded into flags."""
        raw = self.ram.read(self._entry_addr(ref), self._entry.size)
        if self.version == 1:
            flags, domid, frame = V1.unpack(raw)
        else:
            flags, domid, _pad, frame = V2.unpack(raw)
            flags |= STATUS.unpack(self.ram.read(self._status_addr(ref), STATUS.size))[0]
        return flags, domid, frame

    def grant_access(self, ref, domid, gfn, readonly=False):
        """What the guest does: let `domid` map its frame `gfn`."""
        flags = abi.GTF_permit_access | (abi.GTF_readonly if readonly else 0)
        if self.version == 1:
            raw = V1.pack(flags, domid, gfn)
        else:
            raw = V2.pack(flags, domid, 0, gfn)
        self.ram.write(self._entry_addr(ref), raw)

    def set_in_use(self, ref, reading, writing):
        """What Xen does while a grant is mapped: GTF_reading / GTF_writing."""
        bits = (abi.GTF_reading if reading else 0) | (abi.GTF_writing if writing else 0)
        mask = abi.GTF_reading | abi.GTF_writing
        if self.version == 1:
            addr = self._entry_addr(ref)
            flags = (STATUS.unpack(self.ram.read(addr, 2))[0] & ~mask) | bits
            self.ram.write(addr, STATUS.pack(flags))
        else:
            self.ram.write(self._status_addr(ref), STATUS.pack(bits))

    def granted(self):
        """[(ref, flags, domid, gfn)] of every entry in use (flags not zero)."""
        out = []
        for ref in range(self.nr_entries):
            flags, domid, gfn = self.entry(ref)
            if flags:
                out.append((ref, flags, domid, gfn))
        return out

    def describe(self):
        return {"version": self.version, "frames": self.frames, "status_frames": self.status_frames,
                "entries": self.nr_entries, "granted": [list(e) for e in self.granted()]}
