"""Xen's public interface as both sides of a live update see it, the way
Xen's xen/include/public/ is included by the hypervisor and by its tools and
owned by neither: hypercall numbers and struct layouts (abi, the compiled
_xen_abi), the live-update stream's vocabulary and record codecs (lustream,
lurecords), multiboot2 and the boot-information block, Xen's image notes,
the simulated /dev/xen/privcmd socket, sizes and addresses (units).

Imports nothing of kexec_lu or hyperv_sim (tests/test_architecture.py).
"""
