"""cffi build script for hyperv_sim._lu_core: the hypervisor's C core.

API mode, out-of-line: compiled once at install time.  The cdef is the
headers themselves, so the C and Python views of every struct cannot drift.
"""
import glob
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


ffibuilder = FFI()
ffibuilder.cdef(_read("xen_abi.h"))
ffibuilder.cdef(_read("lu_core.h"))
ffibuilder.set_source(
    "hyperv_sim._lu_core",
    '#include <stdint.h>\n#include "xen_abi.h"\n#include "lu_core.h"\n',
    sources=sorted(os.path.relpath(p) for p in glob.glob(os.path.join(HERE, "lu_*.c"))),
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
