"""The chipset: the machine's hardware outside RAM and outside the
hypervisor, one small file beside the RAM file (docs/iommu.md).

It holds the IOMMU's registers, its IOTLB and fault log, the registers of
passthrough devices, and the interrupts waiting for the CPU.  Power-on creates it with RAM, power-off
removes it with RAM; a live update's exec leaves it alone, as a kexec leaves
the chipset, and xen#2 finds it where xen#1 did.  Mapped shared by the
hypervisor and every device process; the IOMMU model in the C core
(csrc/hw_iommu.c) is what reads and writes it on the hardware's side.
"""
import mmap
import os
import stat

from xen_public.abi import PAGE_SIZE

from ._lu_hw import ffi, lib
from .errors import HypervSimError

CHIPSET_FILE = "chipset"
# A page, whatever the struct needs: room to grow without a new file.
SIZE = -(-ffi.sizeof("struct lu_chipset") // PAGE_SIZE) * PAGE_SIZE


class ChipsetError(HypervSimError):
    """The chipset file cannot be created, opened or is not one."""


def parse_bdf(bdf):
    """"0000:03:00.0" -> source id (bus << 8 | device << 3 | function).
    One IOMMU, PCI segment 0."""
    try:
        seg, bus, rest = bdf.split(":")
        dev, fn = rest.split(".")
        seg, bus, dev, fn = int(seg, 16), int(bus, 16), int(dev, 16), int(fn, 16)
    except ValueError:
        raise ValueError("%r is not a PCI device (DDDD:BB:DD.F)" % (bdf,))
    if seg != 0 or not (0 <= bus <= 0xFF and 0 <= dev <= 0x1F and 0 <= fn <= 7):
        raise ValueError("PCI device %s is not behind this host's IOMMU (segment 0, bus 0-ff, "
                         "device 0-1f, function 0-7)" % bdf)
    return bus << 8 | dev << 3 | fn


def bdf_text(sid):
    return "0000:%02x:%02x.%x" % (sid >> 8, (sid >> 3) & 0x1F, sid & 7)


def path_beside(ram_path):
    return os.path.join(os.path.dirname(ram_path) or ".", CHIPSET_FILE)


class Chipset:
    def __init__(self, path, fd):
        self.path = path
        self.fd = fd
        self.map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = ffi.from_buffer("unsigned char[]", self.map, require_writable=True)
        self.c = ffi.cast("struct lu_chipset *", self._view)
        self.regs = self.c.iommu

    @classmethod
    def create(cls, path):
        """Power-on: a new chipset, the IOMMU off and nothing cached."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ChipsetError("cannot create the chipset %s: %s" % (path, e.strerror))
        try:
            os.ftruncate(fd, SIZE)
            chipset = cls(path, fd)
        except OSError as e:
            os.close(fd)
            os.unlink(path)
            raise ChipsetError("cannot make the chipset %s: %s" % (path, e.strerror))
        lib.lu_hw_reset(chipset.c)
        return chipset

    @classmethod
    def open(cls, path):
        """The chipset a power-on made (for a hypervisor, a device, a tool)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise ChipsetError("cannot open the chipset %s: %s" % (path, e.strerror))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != SIZE:
            os.close(fd)
            raise ChipsetError("%s is not a chipset file of this version (%d bytes, expected %d)"
                               % (path, st.st_size, SIZE))
        chipset = cls(path, fd)
        if chipset.c.magic != lib.LU_CHIPSET_MAGIC or chipset.c.version != lib.LU_CHIPSET_VERSION:
            chipset.close()
            raise ChipsetError("%s is not a chipset file of this version" % path)
        return chipset

    def close(self):
        if self.map is not None:
            self.c = self.regs = self._view = None
            self.map.close()
            self.map = None
            os.close(self.fd)

    # What software does: registers and commands.

    def command(self, gcmd):
        lib.lu_hw_command(self.c, gcmd)

    def faults(self):
        """[(sid, iova, reason, write)] in the fault log, oldest first."""
        r = self.regs
        return [(f.sid, f.iova, f.reason, bool(f.write)) for f in r.faults[0:r.nr_faults]]

