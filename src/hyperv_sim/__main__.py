"""`python -m hyperv_sim`: the hyperv-sim command (the hypervisor itself is hyperv_sim.xen)."""
from .cli import main

main()
