"""The real thing: Linux's /dev/xen/privcmd on a Xen control domain.

IOCTL_PRIVCMD_HYPERCALL takes a struct privcmd_hypercall {u64 op; u64
arg[5];} and returns the hypercall's own return value; arguments that are
guest handles are plain addresses in this process, which Xen reads and
writes directly, as the simulator's hypervisor does over its socket.
"""
import errno as errno_mod
import fcntl
import os

from xen_public._xen_abi import ffi
from xen_public.errors import HypervisorUnavailable

DEVICE = "/dev/xen/privcmd"
CAPABILITIES = "/proc/xen/capabilities"
# _IOC(_IOC_NONE, 'P', 0, sizeof(privcmd_hypercall_t)) from xen/sys/privcmd.h.
IOCTL_PRIVCMD_HYPERCALL = (ffi.sizeof("privcmd_hypercall_t") << 16) | (ord("P") << 8) | 0


def is_control_domain(capabilities=CAPABILITIES):
    """True when Linux says this is Xen's control domain (dom0)."""
    try:
        with open(capabilities) as f:
            return "control_d" in f.read()
    except OSError:
        return False


class XenPrivcmd:
    has_reports = False      # no simulator toolstack: no live-update report to follow

    def __init__(self, device=DEVICE, ioctl=fcntl.ioctl):
        self.device = device
        self._ioctl = ioctl

    def hypercall(self, call_bytes):
        """Issue one hypercall; -> its return value."""
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise HypervisorUnavailable("cannot open %s: %s" % (self.device, e.strerror))
        try:
            ret = self._ioctl(fd, IOCTL_PRIVCMD_HYPERCALL, bytearray(call_bytes), True)
        except OSError as e:
            # privcmd returns -1 with errno set to the hypercall's -ret.
            ret = -(e.errno or errno_mod.EIO)
        finally:
            os.close(fd)
        return ret

    def toolstack(self, op, **args):
        raise HypervisorUnavailable("%s is Xen's, not a simulated host: the simulator's "
                                    "toolstack requests are not available" % self.device)


def open_transport(state_dir=None, capabilities=CAPABILITIES, device=DEVICE):
    """A simulated host when one is named (HYPERV_SIM_DIR or state_dir),
    else Xen's privcmd when this is a control domain, else the default
    simulated host (whose absence is reported when first used)."""
    from xen_public.privcmd import SocketPrivcmd
    if state_dir or os.environ.get("HYPERV_SIM_DIR"):
        return SocketPrivcmd(state_dir)
    if is_control_domain(capabilities) and os.path.exists(device):
        return XenPrivcmd(device)
    return SocketPrivcmd()
