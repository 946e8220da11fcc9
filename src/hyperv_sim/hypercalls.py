"""Hypercall dispatch: privcmd requests to the hypervisor's handlers.

Arguments arrive as Xen lays them out (struct privcmd_hypercall); guest
handles are addresses in the calling process, read and written there
(CallerMemory), as copy_from_guest / copy_to_guest do in a PV guest.
"""
import errno
import os
import select
import struct

from xen_public import abi

from ._lu_core import ffi, lib
from .kexec import SEGMENT_SIZE, KexecFailure

CALL_SIZE = ffi.sizeof("privcmd_hypercall_t")


class Fault(Exception):
    """A guest handle the hypervisor cannot follow: -EFAULT."""


class CallerMemory:
    """The calling process's memory, by address (its pid from SO_PEERCRED).

    pidfd, when given, pins the caller: the kernel recycles pids, and
    nothing is written once the caller has exited, so a write can never
    land in another process that took its pid."""

    def __init__(self, pid, pidfd=None):
        self.pid = pid
        self.pidfd = pidfd

    def _gone(self):
        return self.pidfd is not None and bool(select.select([self.pidfd], [], [], 0)[0])

    def _fault(self, what, addr, length, err):
        if err == errno.EFAULT:
            why = "not mapped%s in the caller" % (" writable" if what == "write" else "")
        elif err == errno.ESRCH:
            why = "the caller (pid %d) has exited" % self.pid
        elif err == errno.EPERM:
            why = ("the caller (pid %d) may not be read by the hypervisor (ptrace rules: "
                   "kernel.yama.ptrace_scope, or another user)" % self.pid)
        else:
            why = os.strerror(err)
        return Fault("%s of 0x%x+%d: %s" % (what, addr, length, why))

    def copy_from(self, addr, length):
        buf = bytearray(length)
        err = lib.lu_caller_read(self.pid, addr, ffi.from_buffer(buf), length)
        if err or self._gone():
            raise self._fault("read", addr, length, -err or errno.ESRCH)
        return bytes(buf)

    def copy_to(self, addr, raw):
        if self._gone():
            raise self._fault("write", addr, len(raw), errno.ESRCH)
        err = lib.lu_caller_write(self.pid, addr, raw, len(raw))
        if err:
            raise self._fault("write", addr, len(raw), -err)

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

    def call(self, call_bytes, mem, caller_domid=0):
        """-> return value (>= 0, or -errno) of one hypercall; mem is the
        caller's memory (CallerMemory)."""
        call = ffi.new("privcmd_hypercall_t *")
        ffi.memmove(call, call_bytes, CALL_SIZE)
        if call.op == abi.HYPERVISOR_multicall:
            return self._guarded(call.op, lambda: self.multicall(mem, list(call.arg), caller_domid))
        return self._one(call.op, list(call.arg), mem, caller_domid)

    def _one(self, op, args, mem, caller_domid):
        handler = self.handlers.get(op)
        if handler is None:
            return -abi.ENOSYS
        if self.hv.lu_active and op == abi.HYPERVISOR_kexec_op:
            return -abi.EBUSY
        return self._guarded(op, lambda: self._locked(handler, mem, args, caller_domid))

    def _locked(self, handler, mem, args, caller_domid):
        with self.hv.lock:
            return handler(mem, args, caller_domid)

    def _guarded(self, op, run):
        try:
            return run()
        except Fault as e:
            self.hv.console.log("hypercall %d: %s", op, e)
            return -abi.EFAULT
        except KexecFailure as e:
            self.hv.console.log("kexec: %s", e)
            return -e.errno

    # multicall

    def multicall(self, mem, args, caller_domid):
        """Each entry's call, in order, its result written into the entry
        (libxencall sends even a single memory_op this way).  A multicall
        inside a multicall is -EINVAL in its entry, as Xen's is."""
        entries, nr = args[0], args[1] & 0xFFFFFFFF
        size = ffi.sizeof("multicall_entry_t")
        for i in range(nr):
            e = mem.read_struct("multicall_entry_t", entries + i * size)
            if e.op == abi.HYPERVISOR_multicall:
                ret = -abi.EINVAL
            else:
                ret = self._one(e.op, list(e.args)[:5], mem, caller_domid)
            e.result = ret & 0xFFFFFFFFFFFFFFFF
            mem.write_struct("multicall_entry_t", entries + i * size, e)
        return 0

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
            hv.history.record(lu.report.to_json())
            raise
        lu.start()
        return 0

    # memory_op

    def memory_op(self, mem, args, caller_domid):
        if args[0] == abi.XENMEM_maximum_ram_page:
            return self.hv.ram.nr_frames - 1
        if args[0] == abi.XENMEM_machine_memory_map:
            return self._machine_memory_map(mem, args[1], caller_domid)
        return -abi.ENOSYS

    def _machine_memory_map(self, mem, arg, caller_domid):
        """The host's E820, as Xen gives it to the control domain.  Xen asks
        for one spare entry beyond the map (-EINVAL without it); a NULL
        buffer asks only for the count."""
        if caller_domid != 0:
            return -abi.EPERM
        req = mem.read_struct("xen_memory_map_t", arg)
        e820 = self.hv.e820()
        if req.buffer and req.nr_entries < len(e820) + 1:
            return -abi.EINVAL
        if req.buffer:
            mem.copy_to(req.buffer, b"".join(struct.pack("<QQI", *e) for e in e820))
        req.nr_entries = len(e820)
        mem.write_struct("xen_memory_map_t", arg, req)
        return 0

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
