"""The hypervisor process: `python -I -m hyperv_sim.xen --ram FILE --entry ADDR`.

What a CPU has after a boot loader or kexec jumps: host RAM and an entry
address.  The state directory is dom0's side of the machine (where the
privcmd socket and the console log are), not hypervisor state.  A live
update ends here with an execve into the same command and a new entry.
"""
import gc
import time

# Restoring creates many objects and frees few: the cyclic collector would
# only interrupt the blackout.  Back on once the domains run (main()).
gc.disable()

# The first thing this program does: after a live update, the time the new
# interpreter took to get here is the report's "exec" phase, and the rest of
# its start-up (imports, mapping RAM) up to the restore is "start-up".
STARTED_NS = time.monotonic_ns()

import os                                               # noqa: E402
import sys                                              # noqa: E402
import threading                                        # noqa: E402

# Only what booting (and, after a live update, restoring) needs is imported
# up front: every import here is paid inside a live update's blackout.  The
# privcmd server and its protocol come after the guests run again.
from ._lu_core import lib
from . import statedir
from .chipset import path_beside as chipset_path
from .console import Console
from .history import History
from .errors import BootFailure, RestoreHalted
from .hypervisor import Hypervisor
from .ram import HostRAM, RamError
from .xen_command import xen_argv

# The clients' names for these (xen_public.privcmd: PID_NAME, SOCKET_NAME),
# spelled out: importing the socket client would be paid in the blackout.
PID_FILE = "xen.pid"
SOCKET_FILE = "privcmd"
CONSOLE_FILE = "console.log"
RAM_FILE = "ram"


class _Args:
    """--ram FILE --entry ADDR --state-dir DIR, nothing else: parsed by hand
    because argparse costs milliseconds on every live update's start-up."""

    def __init__(self, argv):
        pairs = dict(zip(argv[::2], argv[1::2]))
        need = {"--ram", "--entry", "--state-dir"}
        if len(argv) != 2 * len(pairs) or not need <= set(pairs) <= need | {"--ram-fd"}:
            raise SystemExit("usage: python -I -m hyperv_sim.xen --ram FILE --entry ADDR "
                             "--state-dir DIR [--ram-fd N]")
        self.ram, self.state_dir = pairs["--ram"], pairs["--state-dir"]
        self.entry = int(pairs["--entry"], 0)
        self.ram_fd = int(pairs["--ram-fd"]) if "--ram-fd" in pairs else None


def _reap_children():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def main(argv=None):
    args = _Args(sys.argv[1:] if argv is None else argv)

    console = Console(os.path.join(args.state_dir, CONSOLE_FILE))
    sock_path = os.path.join(args.state_dir, SOCKET_FILE)
    server = None
    handing_over = threading.Event()
    # Only the toolstack's shutdown powers the host off (RAM dropped).  A
    # signal stops the process as a crash stops a machine: RAM stays.
    powering_off = threading.Event()
    stopped_by = []

    def power_off():
        powering_off.set()
        if server:
            server.stopping.set()

    def on_signal(signum, _frame):
        stopped_by.append(signum)
        if server:
            server.stopping.set()

    def exec_into(entry):
        """The jump into xen#2: only RAM, its command line (in the boot
        information at `entry`) and the entry itself go across."""
        handing_over.set()          # the main thread must not power off now
        server.close()
        hv.sched.shutdown()
        console.log("exec into the new hypervisor at 0x%x", entry)
        console.close()
        # Leave tearing down this address space to a child, after the jump
        # (lu_exec.c); if it cannot start, the exec pays for it instead.
        lib.lu_hold_address_space()
        os.set_inheritable(hv.ram.fd, True)
        os.execv(sys.executable, xen_argv(args.ram, entry, args.state_dir, hv.ram.fd))

    try:
        _write_pid(os.path.join(args.state_dir, PID_FILE))
    except (OSError, statedir.StateDirError) as e:
        print("hyperv-sim: cannot write the pid file: %s" % e, file=sys.stderr)
        return 1
    # The predecessor's address-space holder, if this program was exec'd by
    # a live update, is this process's child: reap it when it is done.
    threading.Thread(target=_reap_children, name="reaper", daemon=True).start()
    profile = os.environ.get("HYPERV_SIM_PROFILE")
    if profile:
        # Developers: where boot (a restore, after a live update) spends its time.
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    try:
        ram = HostRAM.open(args.ram, args.ram_fd)
        hv = Hypervisor(ram, args.entry, console, exec_into=exec_into, started_ns=STARTED_NS,
                        history=History.of(args.state_dir), devices_powered=True)
    except RestoreHalted as e:
        # Halted: RAM and breadcrumb stay for another image to restore from;
        # the console still answers.
        gc.enable()
        console.log("PANIC: %s", e)
        from .toolstack import HaltedToolstack
        toolstack = HaltedToolstack(console, str(e), on_shutdown=power_off, stream=e.stream, facts=e.facts)
        dispatcher = None
        keep_ram, hv = True, None
    except (BootFailure, RamError, OSError) as e:
        console.log("PANIC: %s", e)
        print("hyperv-sim: %s" % e, file=sys.stderr)
        _remove(os.path.join(args.state_dir, PID_FILE))
        return 1
    else:
        gc.enable()
        if profile:
            profiler.disable()
            profiler.dump_stats("%s.%d.%d" % (profile, os.getpid(), hv.incarnation))
        from .hypercalls import Dispatcher
        from .toolstack import Toolstack
        toolstack, dispatcher = Toolstack(hv, on_shutdown=power_off), Dispatcher(hv)
        keep_ram = False
    import signal
    from .privcmd import PrivcmdServer
    server = PrivcmdServer(sock_path, dispatcher, toolstack, console)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console.log("privcmd listening on %s", sock_path)
    try:
        server.serve_forever()
    finally:
        if handing_over.is_set():
            # The update thread is about to execve: RAM must stay.
            threading.Event().wait()
        server.close()
        server.drain()          # the shutdown request's answer goes out before the process ends
        # A name that no longer points at this RAM is someone else's file.
        ours = hv is not None and hv.ram.path_problem() is None
        if hv is not None:
            hv.close()
        _remove(os.path.join(args.state_dir, PID_FILE))
        if powering_off.is_set() and not keep_ram:
            console.log("powered off")
            if ours:
                # Power-off stops the devices too (a halted hypervisor never learnt of them).
                from .devices import stop_devices_beside
                stop_devices_beside(args.ram)
                _remove(args.ram)   # power off: RAM contents are gone, and the chipset's state
                _remove(chipset_path(args.ram))
        else:
            console.log("stopped%s without a power-off: RAM kept in %s "
                        "(hyperv-sim boot --discard starts afresh)",
                        " by signal %d" % stopped_by[0] if stopped_by else "", args.ram)
    return 0


def _write_pid(path):
    """After a live update the file already holds this pid (an exec keeps
    it): nothing to write, nothing that a full disk could fail."""
    mine = "%d\n" % os.getpid()
    try:
        with statedir.open_text(path, "r") as f:
            if f.read() == mine:
                return
    except FileNotFoundError:
        pass
    with statedir.open_text(path, "w") as f:
        f.write(mine)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    sys.exit(main())
