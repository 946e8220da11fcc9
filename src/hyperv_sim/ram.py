"""Host RAM: one sparse file of 4 KiB frames, mapped by the hypervisor.

Guest memory lives only here.  Frames never written cost no disk; scrubbing
punches them back into holes.
"""
import errno
import mmap
import os
import stat

from xen_public.abi import PAGE_SIZE

from ._lu_core import ffi, lib
from .errors import HypervSimError


def _mib(nbytes):
    return "%.1f MiB" % (nbytes / (1 << 20))


class RamError(HypervSimError):
    """Host RAM cannot be created, opened, mapped or addressed as asked."""


class HostRAM:
    def __init__(self, path, fd, size):
        self.path = path
        self.fd = fd
        self.size = size
        self.nr_frames = size // PAGE_SIZE
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # One C view of the whole mapping, for the C core.
        self._view = ffi.from_buffer("unsigned char[]", self.map, require_writable=True)
        self.base = ffi.cast("uint8_t *", self._view)
        # Set during a live update: sees every write, to prove no guest page
        # is written (memory is preserved, never copied).
        self.on_write = None
        # ram_sparse on the command line: nothing reserved, for a host
        # bigger than its disk (a full disk then kills it, as before).
        self.sparse = False

    @classmethod
    def create(cls, path, size):
        """A new, all-zero host RAM file of `size` bytes (no disk used yet)."""
        if size <= 0 or size % PAGE_SIZE:
            raise RamError("RAM size %d is not a positive multiple of 4 KiB" % size)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise RamError("cannot create host RAM %s: %s" % (path, e.strerror))
        try:
            os.ftruncate(fd, size)
            return cls(path, fd, size)
        except (OSError, ValueError) as e:     # no space for the size, no address space to map it
            os.close(fd)
            os.unlink(path)
            raise RamError("cannot make %s host RAM of %d bytes: %s"
                           % (path, size, getattr(e, "strerror", None) or e))

    @classmethod
    def open(cls, path, fd=None):
        """The RAM file at path, or the one already open as fd (named path)."""
        if fd is not None:
            try:
                os.set_inheritable(fd, False)
            except OSError as e:
                raise RamError("host RAM %s: descriptor %d: %s" % (path, fd, e.strerror))
            return cls._checked(path, fd)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise RamError("cannot open host RAM %s: %s" % (path, e.strerror))
        return cls._checked(path, fd)

    @classmethod
    def _checked(cls, path, fd):
        st = os.fstat(fd)
        size = st.st_size
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise RamError("%s is not a regular file" % path)
        if size <= 0 or size % PAGE_SIZE:
            os.close(fd)
            raise RamError("%s: size %d is not a multiple of 4 KiB" % (path, size))
        try:
            return cls(path, fd, size)
        except (OSError, ValueError) as e:
            os.close(fd)
            raise RamError("cannot map host RAM %s: %s" % (path, getattr(e, "strerror", None) or e))

    def close(self):
        self.base = self._view = None
        self.map.close()
        os.close(self.fd)

    def _check(self, maddr, length):
        if maddr < 0 or length < 0 or maddr + length > self.size:
            raise RamError("machine range [0x%x, 0x%x) lies outside RAM (0x%x bytes)"
                           % (maddr, maddr + length, self.size))

    def read(self, maddr, length):
        self._check(maddr, length)
        return self.map[maddr:maddr + length]

    def write(self, maddr, data):
        self._check(maddr, len(data))
        if self.on_write:
            self.on_write(maddr, len(data))
        self.map[maddr:maddr + len(data)] = data

    def zero(self, maddr, length):
        """Write zeros (the pages stay allocated: for data that is kept)."""
        self._check(maddr, length)
        if self.on_write:
            self.on_write(maddr, length)
        step = 1 << 20
        zeros = bytes(step)
        for off in range(maddr, maddr + length, step):
            n = min(step, maddr + length - off)
            self.map[off:off + n] = zeros[:n]

    def scrub(self, maddr, length):
        """Return frames to zero without writing: punch them out of the file."""
        self._check(maddr, length)
        if maddr % PAGE_SIZE or length % PAGE_SIZE:
            raise RamError("scrub of [0x%x, +0x%x) is not frame-aligned" % (maddr, length))
        if self.on_write:
            self.on_write(maddr, length)
        rc = lib.lu_ram_scrub(self.fd, maddr, length)
        if rc < 0:
            # Filesystems without hole punching: write the zeros instead.
            self.zero(maddr, length)

    def populate(self, maddr, length, write=True):
        """Take the page faults of [maddr, +length) now, all at once and
        without the GIL, changing no byte: for writing (every page becomes
        dirty, to be written back), or for reading.  False where the kernel
        cannot."""
        self._check(maddr, length)
        start = maddr - maddr % PAGE_SIZE
        return lib.lu_ram_populate(self.base + start, maddr + length - start, int(write)) == 0

    def pointer(self, maddr, ctype="unsigned char *"):
        """A C pointer into RAM at maddr, for the C core."""
        self._check(maddr, 0)
        return ffi.cast(ctype, self.base + maddr)

    def reserve(self, maddr, length):
        """Back [maddr, +length) with disk now, changing no byte: a frame
        handed out must never meet a full filesystem on its first write
        (that is a SIGBUS, and the host with it).  RamError on ENOSPC."""
        self._check(maddr, length)
        if not length or self.sparse:
            return
        try:
            os.posix_fallocate(self.fd, maddr, length)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return              # a filesystem that cannot reserve: as before
            st = os.fstatvfs(self.fd)
            raise RamError("no disk for host RAM: %s more needed in %s, %s free (%s)"
                           % (_mib(length), os.path.dirname(self.path) or ".",
                              _mib(st.f_bavail * st.f_frsize), e.strerror)) from None

    def path_problem(self):
        """None while self.path names the file this RAM is mapped from; else
        what happened to it (removed, replaced): RAM is the file open here,
        and a recover can only start from a name."""
        try:
            named = os.lstat(self.path)
        except FileNotFoundError:
            return "the RAM file %s was removed while the host runs" % self.path
        except OSError as e:
            return "the RAM file %s cannot be checked: %s" % (self.path, e.strerror)
        mine = os.fstat(self.fd)
        if (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino):
            return "the RAM file %s was replaced while the host runs" % self.path
        return None

    def disk_usage(self):
        """Bytes of the RAM file actually backed by disk."""
        return os.fstat(self.fd).st_blocks * 512
