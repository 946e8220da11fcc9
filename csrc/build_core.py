"""cffi build script for hyperv_sim._lu_core, the hypervisor's C core, and
hyperv_sim._lu_hw, the hardware model (chipset, IOMMU).

API mode, out-of-line: compiled once at install time.  The cdef is the
headers themselves, so the C and Python views of every struct cannot drift:
Xen's public structs (xen_abi.h), what guests see (lu_guest.h), then the
hypervisor's private structures and the C core (lu_core.h, which includes
lu_guest.h).
"""
import glob
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

# cdef order: each header after every header it #includes.
HEADERS = ("xen_abi.h", "lu_guest.h", "hw_nic.h", "lu_core.h")

_GUARD = re.compile(r"\A(.*?)^#ifndef (\w+)\n#define \2\n(.*)^#endif\b[^\n]*\n\s*\Z", re.S | re.M)
_INCLUDE = re.compile(r'^#include "([^"]+)"[ \t]*$', re.M)


def _read(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def _cdef_text(name, before):
    """A header as cdef() takes it.  cffi parses no directive but #define
    NAME NUMBER, so the include guard and the #include lines go (blank
    lines instead, to keep cffi's line numbers); each included header must
    be among those cdef'd before it.  Any other directive still fails the
    build."""
    text = _read(name)
    m = _GUARD.match(text)
    if m:
        text = m.group(1) + "\n\n" + m.group(3) + "\n"
    for included in _INCLUDE.findall(text):
        if included not in before:
            raise ValueError("csrc/%s includes %s, which is not cdef'd before it (HEADERS)"
                             % (name, included))
    return _INCLUDE.sub("", text)


def _builder(module, headers, sources):
    """An FFI for module: the headers cdef'd in order, the sources (globs
    under csrc/) compiled with them."""
    builder = FFI()
    for i, header in enumerate(headers):
        builder.cdef(_cdef_text(header, headers[:i]))
    builder.set_source(
        module,
        "#include <stdint.h>\n" + "".join('#include "%s"\n' % h for h in headers if h != "lu_guest.h"),
        sources=sorted(os.path.relpath(p) for pattern in sources for p in glob.glob(os.path.join(HERE, pattern))),
        include_dirs=[HERE],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
    )
    return builder


# nic_*.c is the NIC's packet format, in both: the guest's driver (in the
# core's workload) and the device use it.
ffibuilder = _builder("hyperv_sim._lu_core", HEADERS, ("lu_*.c", "nic_*.c"))
# The machine's hardware outside the hypervisor (the chipset file and the
# IOMMU model), a module of its own: device processes load it without the
# hypervisor's core, and the hypervisor drives the chipset through it.
hwbuilder = _builder("hyperv_sim._lu_hw", ("hw_iommu.h", "hw_nic.h"), ("hw_*.c", "nic_*.c"))

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
    hwbuilder.compile(verbose=True)
