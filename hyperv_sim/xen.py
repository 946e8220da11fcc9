"""The hypervisor process: `python -m hyperv_sim.xen --ram FILE --entry ADDR`.

What a CPU has after a boot loader or kexec jumps: host RAM and an entry
address.  The state directory is dom0's side of the machine (where the
privcmd socket and the console log are), not hypervisor state.
"""
import argparse
import os
import signal
import sys

from .console import Console
from .hypercalls import Dispatcher
from .hypervisor import BootFailure, Hypervisor
from .privcmd import PrivcmdServer
from .ram import HostRAM, RamError
from .toolstack import Toolstack

PID_FILE = "xen.pid"
CONSOLE_FILE = "console.log"
RAM_FILE = "ram"
SOCKET_FILE = "privcmd"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="hyperv_sim.xen")
    ap.add_argument("--ram", required=True)
    ap.add_argument("--entry", required=True, type=lambda s: int(s, 0))
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)

    console = Console(os.path.join(args.state_dir, CONSOLE_FILE))
    try:
        ram = HostRAM.open(args.ram)
        hv = Hypervisor(ram, args.entry, console)
    except (BootFailure, RamError, OSError) as e:
        console.log("PANIC: %s", e)
        print("hyperv-sim: %s" % e, file=sys.stderr)
        return 1

    server = None

    def stop(*_):
        if server:
            server.stopping.set()

    sock_path = os.path.join(args.state_dir, SOCKET_FILE)
    server = PrivcmdServer(sock_path, Dispatcher(hv), Toolstack(hv, on_shutdown=stop), console)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(os.path.join(args.state_dir, PID_FILE), "w") as f:
        f.write("%d\n" % os.getpid())
    console.log("privcmd listening on %s", sock_path)
    try:
        server.serve_forever()
    finally:
        server.close()
        hv.close()
        console.log("powered off")
        # Power off: RAM contents are gone.
        for path in (os.path.join(args.state_dir, PID_FILE), args.ram):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
