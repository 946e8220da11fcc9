"""The machine-to-phys table: mfn -> gfn for every guest frame, 8 bytes a
frame in Xen-owned frames of host RAM.  PV guests read it; unlike the frame
table it is system state kept as is across a live update."""
from xen_public.abi import PAGE_SIZE
from xen_public.units import align_up

from ._lu_core import lib

INVALID = (1 << 64) - 1


class M2P:
    def __init__(self, ram, base_maddr, nr_frames):
        self.ram = ram
        self.base_maddr = base_maddr
        self.nr_frames = nr_frames
        self.table = ram.pointer(base_maddr, "uint64_t *")

    @staticmethod
    def bytes_for(nr_frames):
        return align_up(nr_frames * 8, PAGE_SIZE)

    def set_run(self, mfn, gfn, count):
        lib.lu_fill_run(self.table + mfn, gfn, count)

    def invalidate(self, mfn, count):
        lib.lu_fill_value(self.table + mfn, INVALID, count)

    def check_run(self, mfn, gfn, count):
        """The first of count frames from mfn whose entry is not gfn + i,
        or None."""
        i = lib.lu_check_run(self.table + mfn, gfn, count)
        return None if i == count else mfn + i

    def get(self, mfn):
        return self.table[mfn]
