"""The hypervisor's command line, the one way it is started: the first boot,
every live update's exec into xen#2, and recover.

`-I` (isolated mode): neither the working directory nor PYTHON* variables
nor the user's site-packages decide which `hyperv_sim` runs.  With plain
`-m`, a directory holding any folder named `hyperv_sim` (the project's own
source tree, say) would be imported instead of the installed package.
"""
import sys


def xen_argv(ram_path, entry, state_dir, ram_fd=None):
    """ram_fd: across a live update's exec, RAM goes as the open file (the
    name is for messages and for recover): a name removed in between
    cannot take it."""
    argv = [sys.executable, "-I", "-m", "hyperv_sim.xen", "--ram", ram_path,
            "--entry", hex(entry), "--state-dir", state_dir]
    return argv + ["--ram-fd", str(ram_fd)] if ram_fd is not None else argv
