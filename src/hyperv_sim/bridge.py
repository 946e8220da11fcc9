"""`hyperv-sim run -- CMD`: an unmodified Xen tool on the simulated host,
as if in its PV control domain, through the privcmd bridge.

The bridge is a C library (csrc/privcmd_bridge.c, built at install) that
the tool runs with preloaded: /proc/xen and /dev/xen are looked up in the
host's STATE/bridge/ tree made here, IOCTL_PRIVCMD_HYPERCALL goes to the
host's privcmd socket, Xen's CPUID leaves answer the forced-emulation
prefix, and nothing the tool does reaches this machine's network
interfaces, reboot or kexec_load.  HYPERV_SIM_DIR is taken out of the
tool's environment: it is on a Xen dom0 now, not beside a simulated host.
"""
import glob
import os

from xen_public.privcmd import SocketPrivcmd

from . import statedir
from .errors import HypervSimError

BRIDGE_ENV = "HYPERV_SIM_BRIDGE"        # the host's state directory, for the library
TREE = "bridge"
CAPABILITIES = "control_d\n"            # what Linux's xenfs says in a control domain


class BridgeError(HypervSimError):
    pass


class CommandNotRun(BridgeError):
    """The command could not be started (exit statuses as a shell's)."""

    def __init__(self, message, exit_status):
        super().__init__(message)
        self.exit_status = exit_status


def library():
    """The installed bridge library."""
    found = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "_privcmd_bridge*.so")))
    if not found:
        raise BridgeError("the privcmd bridge library is not installed (reinstall kexec-lu)")
    return found[0]


def prepare_tree(state_dir):
    """STATE/bridge/proc-xen/capabilities and STATE/bridge/dev-xen/privcmd,
    owner-only, never through a symlink.  No dev-xen/hypercall: libxencall
    then uses ordinary memory for its buffers."""
    root = os.path.join(state_dir, TREE)
    proc, dev = os.path.join(root, "proc-xen"), os.path.join(root, "dev-xen")
    for d in (root, proc, dev):
        statedir.check(d)
    fd = statedir.open_file(os.path.join(proc, "capabilities"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, CAPABILITIES.encode())
    finally:
        os.close(fd)
    os.close(statedir.open_file(os.path.join(dev, "privcmd"), os.O_RDWR | os.O_CREAT))


def run(state_dir, argv):
    """Exec argv under the bridge, against the host in state_dir; returns
    only if it cannot."""
    lib = library()
    state_dir = os.path.abspath(state_dir)
    SocketPrivcmd(state_dir).toolstack("ping")      # the host answers, or one line says why not
    prepare_tree(state_dir)
    env = dict(os.environ)
    env.pop("HYPERV_SIM_DIR", None)
    env[BRIDGE_ENV] = state_dir
    env["LD_PRELOAD"] = " ".join(p for p in (lib, env.get("LD_PRELOAD")) if p)
    import ctypes
    # Its constructor confines this process (capabilities, no new
    # privileges) before the exec: a tool the preload cannot reach, a
    # static binary, is held too.
    ctypes.CDLL(lib)
    try:
        os.execvpe(argv[0], list(argv), env)
    except FileNotFoundError:
        raise CommandNotRun("%s: command not found" % argv[0], 127) from None
    except OSError as e:
        raise CommandNotRun("%s: %s" % (argv[0], e.strerror), 126) from None
