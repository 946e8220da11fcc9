"""hyperv-sim: a simulated Xen-like hypervisor that can be live-updated."""
