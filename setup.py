# setuptools needs this file only to hand cffi its build scripts (API mode,
# out-of-line): the C core and the Xen ABI structs are compiled at install time.
from setuptools import setup

setup(
    cffi_modules=[
        "csrc/build_abi.py:ffibuilder",
        "csrc/build_core.py:ffibuilder",
    ],
)
