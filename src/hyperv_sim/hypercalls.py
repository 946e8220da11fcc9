"""Hypercall dispatch: privcmd requests to the hypervisor's handlers.

Arguments arrive as Xen lays them out; guest handles are resolved in the
caller's buffers (GuestMemory), as copy_from_guest / copy_to_guest would.
"""
from xen_public import abi

from ._lu_core import ffi
from .kexec import SEGMENT_SIZE, KexecFailure

CALL_SIZE = ffi.sizeof("privcmd_hypercall_t")


class Fault(Exception):
    """A guest handle that points outside the caller's buffers: -EFAULT."""


class GuestMemory:
    """The caller's buffers, by address."""

    def __init__(self, regions):
        self.regions = regions

    def _find(self, addr, length):
        for base, data in self.regions:
            if base <= addr and addr + length <= base + len(data):
                return data, addr - base
        raise Fault("0x%x+%d is not in the caller's buffers" % (addr, length))

    def copy_from(self, addr, length):
        data, off = self._find(addr, length)
        return bytes(data[off:off + length])

    def copy_to(self, addr, raw):
        data, off = self._find(addr, len(raw))
        data[off:off + len(raw)] = raw

    def read_struct(self, ctype, addr):
        obj = ffi.new(ctype + " *")
        ffi.memmove(obj, self.copy_from(addr, ffi.sizeof(ctype)), ffi.sizeof(ctype))
        return obj

    def write_struct(self, ctype, addr, obj):
        self.copy_to(addr, ffi.buffer(obj, ffi.sizeof(ctype))[:])


class Dispatcher:
    def __init__(self, hv):
        self.hv = hv
        self.handlers = {
            abi.HYPERVISOR_kexec_op: self.kexec_op,
            abi.HYPERVISOR_xen_version: self.xen_version,
            abi.HYPERVISOR_memory_op: self.memory_op,
        }

    def call(self, call_bytes, regions, caller_domid=0):
        """-> return value (>= 0, or -errno) of one hypercall."""
        call = ffi.new("privcmd_hypercall_t *")
        ffi.memmove(call, call_bytes, CALL_SIZE)
        handler = self.handlers.get(call.op)
        if handler is None:
            return -abi.ENOSYS
        mem = GuestMemory(regions)
        if self.hv.lu_active and call.op == abi.HYPERVISOR_kexec_op:
            return -abi.EBUSY
        try:
            with self.hv.lock:
                return handler(mem, list(call.arg), caller_domid)
        except Fault as e:
            self.hv.console.log("hypercall %d: %s", call.op, e)
            return -abi.EFAULT
        except KexecFailure as e:
            self.hv.console.log("kexec: %s", e)
            return -e.errno

    # kexec_op

    def kexec_op(self, mem, args, caller_domid):
        cmd, arg = args[0], args[1]
        if caller_domid != 0:
            # Only the control domain may kexec (Xen's XSM check).
            raise KexecFailure(abi.EPERM, "kexec_op from d%d refused" % caller_domid)
        kexec = self.hv.kexec
        if cmd == abi.KEXEC_CMD_kexec_get_range:
            rng = mem.read_struct("xen_kexec_range_t", arg)
            rng.start, rng.size = kexec.get_range(rng.range, rng.nr)
            mem.write_struct("xen_kexec_range_t", arg, rng)
            return 0
        if cmd == abi.KEXEC_CMD_kexec_load:
            load = mem.read_struct("xen_kexec_load_t", arg)
            if load.nr_segments > abi.KEXEC_SEGMENT_MAX:
                raise KexecFailure(abi.EINVAL, "load: %d segments (at most %d)"
                                   % (load.nr_segments, abi.KEXEC_SEGMENT_MAX))
            segs = []
            for i in range(load.nr_segments):
                s = mem.read_struct("xen_kexec_segment_t", load.segments + i * SEGMENT_SIZE)
                segs.append((s.buf, s.buf_size, s.dest_maddr, s.dest_size))
            kexec.load(load.type, load.arch, load.entry_maddr, segs, mem.copy_from)
            return 0
        if cmd == abi.KEXEC_CMD_kexec_unload:
            kexec.unload(mem.read_struct("xen_kexec_unload_t", arg).type)
            return 0
        if cmd == abi.KEXEC_CMD_kexec_status:
            return kexec.status(mem.read_struct("xen_kexec_status_t", arg).type)
        if cmd == abi.KEXEC_CMD_kexec:
            ktype = mem.read_struct("xen_kexec_exec_t", arg).type
            if ktype not in abi.KEXEC_TYPE_NAMES:
                raise KexecFailure(abi.EINVAL, "exec: unknown image type %d" % ktype)
            if ktype == abi.KEXEC_TYPE_LIVEUPDATE:
                return self._live_update()
            if ktype not in kexec.images:
                raise KexecFailure(abi.ENOENT, "exec: no %s image loaded"
                                   % abi.KEXEC_TYPE_NAMES[ktype])
            raise KexecFailure(abi.EOPNOTSUPP, "exec of a %s image (a reboot) is not "
                               "supported by the simulator" % abi.KEXEC_TYPE_NAMES[ktype])
        return -abi.EINVAL

    def _live_update(self):
        """Pre-flight now; the update itself runs once domains quiesce."""
        from .liveupdate.engine import LiveUpdate
        hv = self.hv
        if hv.lu_active:
            raise KexecFailure(abi.EBUSY, "exec: a live update is already in progress")
        lu = LiveUpdate(hv, fault_point=hv.lu_fault or hv.opts.lu_fault)
        hv.lu_fault = None
        hv.lu_report = lu.report
        try:
            lu.preflight()
        except KexecFailure as e:
            lu.report.finish("refused", str(e))
            raise
        lu.start()
        return 0

    # memory_op

    def memory_op(self, mem, args, caller_domid):
        if args[0] == abi.XENMEM_maximum_ram_page:
            return self.hv.ram.nr_frames - 1
        return -abi.ENOSYS

    # xen_version

    def xen_version(self, mem, args, caller_domid):
        cmd, arg = args[0], args[1]
        p = self.hv.personality
        if cmd == abi.XENVER_version:
            return (p.major << 16) | p.minor
        if cmd == abi.XENVER_extraversion:
            mem.copy_to(arg, p.extra.encode()[:15].ljust(16, b"\0"))
            return 0
        if cmd == abi.XENVER_pagesize:
            return abi.PAGE_SIZE
        if cmd == abi.XENVER_commandline:
            if caller_domid != 0:
                return -abi.EPERM
            mem.copy_to(arg, self.hv.cmdline.encode()[:1023].ljust(1024, b"\0"))
            return 0
        return -abi.EINVAL
