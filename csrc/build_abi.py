"""cffi build script for xen_public._xen_abi: Xen's public structs, nothing else.

The client side (kexec-lu) needs the struct layouts but none of the C core.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(HERE, "xen_abi.h")) as f:
    XEN_ABI_H = f.read()

ffibuilder = FFI()
ffibuilder.cdef(XEN_ABI_H)
ffibuilder.set_source(
    "xen_public._xen_abi",
    '#include <stdint.h>\n#include "xen_abi.h"\n',
    include_dirs=[HERE],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
