"""kexec_op, memory_op and xen_version, as a dom0 client issues them.

Arguments are built as Xen's own structs (cffi, csrc/xen_abi.h) in this
process's memory; guest handles are those buffers' real addresses, exactly
what /dev/xen/privcmd passes, and the hypervisor reads and writes them where
they are.  Every buffer must stay alive until its call returns.
"""
from xen_public import abi
from xen_public._xen_abi import ffi
from xen_public.errors import Busy

from .errors import HypercallError
from .xenprivcmd import open_transport


def handle(cdata):
    """A guest handle: the address of a buffer in this process (0 for NULL)."""
    return int(ffi.cast("uintptr_t", cdata))


class XenClient:
    """The hypercalls kexec-lu needs, over a privcmd transport."""

    def __init__(self, transport=None):
        self.transport = transport or open_transport()

    def _hypercall(self, op, args):
        call = ffi.new("privcmd_hypercall_t *")
        call.op = op
        for i, a in enumerate(args):
            call.arg[i] = a
        return self.transport.hypercall(ffi.buffer(call)[:])

    def _kexec_op(self, what, cmd, struct_ptr):
        ret = self._hypercall(abi.HYPERVISOR_kexec_op, [cmd, handle(struct_ptr)])
        if ret == -abi.EBUSY:
            raise Busy("%s: a live update is in progress; retry when it is done" % what)
        if ret < 0:
            raise HypercallError(what, -ret)
        return ret

    # kexec_op

    def get_range(self, range_id, nr=0):
        """(start, size) of a KEXEC_RANGE_MA_* range."""
        rng = ffi.new("xen_kexec_range_t *", {"range": range_id, "nr": nr})
        self._kexec_op("kexec get_range(%s)" % abi.KEXEC_RANGE_NAMES.get(range_id, range_id),
                       abi.KEXEC_CMD_kexec_get_range, rng)
        return rng.start, rng.size

    def kexec_load(self, ktype, arch, entry_maddr, segments):
        """segments: [(data bytes, dest_maddr, dest_size)]; data None is a
        NULL buffer, a range Xen only maps (kexec-tools' first MiB)."""
        segs = ffi.new("xen_kexec_segment_t[]", max(len(segments), 1))
        keep = []           # the segments' bytes, alive until the call returns
        for i, (data, dest, dest_size) in enumerate(segments):
            if data is None:
                buf = ffi.NULL
            else:
                # No bytes is still a buffer (the range is zeroed), not NULL.
                buf = ffi.from_buffer(data) if data else ffi.new("char[1]")
            keep.append(buf)
            segs[i].buf = handle(buf)
            segs[i].buf_size = len(data or b"")
            segs[i].dest_maddr = dest
            segs[i].dest_size = dest_size
        load = ffi.new("xen_kexec_load_t *")
        load.type = ktype
        load.arch = arch
        load.nr_segments = len(segments)
        load.segments = handle(segs)
        load.entry_maddr = entry_maddr
        return self._kexec_op("kexec load", abi.KEXEC_CMD_kexec_load, load)

    def kexec_unload(self, ktype):
        return self._kexec_op("kexec unload", abi.KEXEC_CMD_kexec_unload,
                              ffi.new("xen_kexec_unload_t *", {"type": ktype}))

    def kexec_status(self, ktype):
        """1 if an image of this type is loaded, 0 if not."""
        return self._kexec_op("kexec status", abi.KEXEC_CMD_kexec_status,
                              ffi.new("xen_kexec_status_t *", {"type": ktype}))

    def kexec_exec(self, ktype):
        return self._kexec_op("kexec exec", abi.KEXEC_CMD_kexec,
                              ffi.new("xen_kexec_exec_t *", {"type": ktype}))

    # memory_op

    def max_ram_page(self):
        """The highest machine frame number of host RAM."""
        ret = self._hypercall(abi.HYPERVISOR_memory_op, [abi.XENMEM_maximum_ram_page, 0])
        if ret < 0:
            raise HypercallError("memory_op(maximum_ram_page)", -ret)
        return ret

    # xen_version

    def _xen_version(self, cmd, ctype=None):
        buf = ffi.new(ctype) if ctype else ffi.NULL
        ret = self._hypercall(abi.HYPERVISOR_xen_version, [cmd, handle(buf)])
        if ret < 0:
            raise HypercallError("xen_version(%d)" % cmd, -ret)
        return ret, buf

    def version(self):
        """(major, minor, extraversion) of the running hypervisor."""
        ret, _ = self._xen_version(abi.XENVER_version)
        _, extra = self._xen_version(abi.XENVER_extraversion, "xen_extraversion_t *")
        return ret >> 16, ret & 0xFFFF, ffi.string(extra[0]).decode()

    def commandline(self):
        """The running hypervisor's boot command line."""
        _, line = self._xen_version(abi.XENVER_commandline, "xen_commandline_t *")
        return ffi.string(line[0]).decode()
