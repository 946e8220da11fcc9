# setuptools needs this file to hand cffi its build scripts (API mode,
# out-of-line: the C core and the Xen ABI structs are compiled at install
# time) and to build the privcmd bridge, a plain shared library that
# `hyperv-sim run` preloads into a Xen tool (no Python in it).
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("hyperv_sim._privcmd_bridge", sources=["csrc/privcmd_bridge.c"],
                  libraries=["dl"],
                  extra_compile_args=["-O2", "-Wall", "-Wextra",
                                      "-Werror=implicit-function-declaration"]),
    ],
    cffi_modules=[
        "csrc/build_abi.py:ffibuilder",
        "csrc/build_core.py:ffibuilder",
        "csrc/build_core.py:hwbuilder",
    ],
)
