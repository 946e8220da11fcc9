"""The hypervisor's command line, the one way it is started: the first boot,
every live update's exec into xen#2, and recover.

`-I` (isolated mode): neither the working directory nor PYTHON* variables
nor the user's site-packages decide which `hyperv_sim` runs.  With plain
`-m`, a directory holding any folder named `hyperv_sim` (the project's own
source tree, say) would be imported instead of the installed package.
"""
import sys


def xen_argv(ram_path, entry, state_dir):
    return [sys.executable, "-I", "-m", "hyperv_sim.xen", "--ram", ram_path,
            "--entry", hex(entry), "--state-dir", state_dir]
