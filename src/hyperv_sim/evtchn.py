"""Event channels: a domain's ports (Xen-private) and their pending/masked
bits (in guest memory, so they survive anything that keeps memory).

The 2-level ABI keeps the bits in the shared-info page; the FIFO ABI in an
event array page the guest registered.  The ABI is fixed when the domain is
built, before any port is bound.
"""

from xen_public import abi
from xen_public.abi import PAGE_SIZE

from ._lu_core import ffi, lib

ABIS = {"2-level": lib.LU_EVTCHN_2L, "fifo": lib.LU_EVTCHN_FIFO}
KINDS = ("unbound", "interdomain", "virq", "ipi")
FIFO_PORTS = PAGE_SIZE // 4     # one event array page


class EvtchnError(Exception):
    pass


class Port:
    __slots__ = ("port", "kind", "vcpu", "remote_domid", "remote_port", "virq")

    def __init__(self, port, kind, vcpu=0, remote_domid=None, remote_port=None, virq=None):
        self.port, self.kind, self.vcpu = port, kind, vcpu
        self.remote_domid, self.remote_port, self.virq = remote_domid, remote_port, virq

    def describe(self):
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


class EventChannels:
    def __init__(self, ram, abi_name, bits_mfn):
        """bits_mfn: the shared-info frame (2-level) or the event array
        frame (FIFO) where pending and masked bits live."""
        if abi_name not in ABIS:
            raise EvtchnError("unknown event channel ABI %r" % abi_name)
        self.ram = ram
        self.abi = abi_name
        self.bits_mfn = bits_mfn
        self.ports = {}

    @property
    def max_ports(self):
        return FIFO_PORTS if self.abi == "fifo" else abi.EVTCHN_2L_NR_CHANNELS

    def alloc(self, kind, **fields):
        """Bind the lowest free port (0 is never used, as in Xen)."""
        for port in range(1, self.max_ports):
            if port not in self.ports:
                self.ports[port] = Port(port, kind, **fields)
                return port
        raise EvtchnError("no free event channel port (%d in use)" % len(self.ports))

    def lu_port(self, port):
        """The C core's view of a port, kept alive by the caller."""
        p = ffi.new("struct lu_port *")
        p.page = self.ram.pointer(self.bits_mfn * PAGE_SIZE, "uint8_t *")
        p.port = port
        p.abi = ABIS[self.abi]
        return p

    def pending(self, port):
        return bool(lib.lu_port_pending(self.lu_port(port)))

    def masked(self, port):
        return bool(lib.lu_port_masked(self.lu_port(port)))

    def set_pending(self, port):
        lib.lu_port_set_pending(self.lu_port(port))

    def clear_pending(self, port):
        lib.lu_port_clear_pending(self.lu_port(port))

    def mask(self, port):
        base = self.bits_mfn * PAGE_SIZE
        if self.abi == "fifo":
            off = base + port * 4
            word = int.from_bytes(self.ram.read(off, 4), "little") | abi.EVTCHN_FIFO_MASKED
            self.ram.write(off, word.to_bytes(4, "little"))
        else:
            off = base + abi.SHINFO_EVTCHN_MASK + (port // 64) * 8
            word = int.from_bytes(self.ram.read(off, 8), "little") | (1 << (port % 64))
            self.ram.write(off, word.to_bytes(8, "little"))

    def describe(self):
        return [dict(p.describe(), pending=self.pending(n), masked=self.masked(n))
                for n, p in sorted(self.ports.items())]


def bind_interdomain(local, local_domid, remote, remote_domid, local_vcpu=0):
    """An interdomain channel: a port on each side naming the other."""
    lport = local.alloc("interdomain", vcpu=local_vcpu, remote_domid=remote_domid)
    rport = remote.alloc("interdomain", remote_domid=local_domid, remote_port=lport)
    local.ports[lport].remote_port = rport
    return lport, rport
