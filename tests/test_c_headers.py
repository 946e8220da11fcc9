"""csrc/'s headers are split the way Xen splits its public headers from its
private ones.  lu_guest.h holds what lives in guest memory and is seen by
guest software, dom0's device model and backends.  It compiles on its own,
holds no host pointer or function, and names nothing of the hypervisor's.
lu_core.h holds the hypervisor's private structures and the C core; it
includes lu_guest.h and declares none of its names again.  The cffi module
(csrc/build_core.py) still has every name of both."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from hyperv_sim._lu_core import ffi, lib

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"
GUEST, CORE, XEN_ABI = CSRC / "lu_guest.h", CSRC / "lu_core.h", CSRC / "xen_abi.h"
NIC = CSRC / "hw_nic.h"     # the NIC's format, which the guest's driver in the core shares
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")

# Hypervisor-private names the guest header must never mention, even in a
# comment.  declared(CORE) adds everything else lu_core.h declares.
PRIVATE = {"lu_frame", "lu_frame_use", "lu_pgt", "lu_expect", "lu_vcpu", "lu_sched",
           "lu_regs", "lu_port", "lu_dm_client", "lu_backend", "lu_stream_error",
           "type_info", "count_info"}
# What guests see: each must stay in lu_guest.h.
GUEST_NAMES = {"lu_ioreq", "lu_ioreq_state", "LU_IOREQ_READY", "LU_IORESP_READY",
               "LU_IO_MMIO_BASE", "lu_sring", "lu_ring", "LU_RING_SIZE", "lu_guest_info",
               "lu_guest_vcpu", "lu_guest_flags", "LU_GUEST_IDLE", "lu_pte", "LU_PTE_PRESENT"}


def code(text):
    """A header without its comments and preprocessor lines."""
    text = re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", " ", text, flags=re.S))
    return re.sub(r"^[ \t]*#[^\n]*", "", text, flags=re.M)


def declared(path):
    """{name: kind} of what a header declares: struct and enum tags
    ("struct", "enum"), enumerators and functions."""
    src = code(path.read_text())
    names = {}
    for tag in re.findall(r"\bstruct\s+(\w+)\s*\{", src):
        names[tag] = "struct"
    for tag, body in re.findall(r"\benum\s+(\w+)\s*\{([^}]*)\}", src):
        names[tag] = "enum"
        for item in body.split(","):
            if item.strip():
                names[item.split("=")[0].strip()] = "enumerator"
    for fn in re.findall(r"\b(\w+)\s*\([^;{}]*\)\s*;", src):
        names[fn] = "function"
    return names


def words(text):
    return set(re.findall(r"\b\w+\b", text))


def test_the_parser_sees_what_each_header_declares():
    """Not vacuous: the private names are found in lu_core.h, the guest ones
    in lu_guest.h."""
    core, guest = declared(CORE), declared(GUEST)
    assert PRIVATE - {"type_info", "count_info"} <= set(core)
    assert {"lu_frames_set", "lu_sched_run", "lu_stream_validate", "LU_USE_FREE"} <= set(core)
    assert GUEST_NAMES <= set(guest)
    assert guest["lu_ioreq"] == "struct" and core["lu_frames_scan"] == "function"


def test_guest_header_names_nothing_private():
    """lu_guest.h mentions no name lu_core.h declares, code or comments."""
    text = GUEST.read_text()
    private = (PRIVATE | set(declared(CORE))) & words(text)
    assert not private, "hypervisor-private names in csrc/lu_guest.h: %s" % sorted(private)


def test_guest_header_is_self_contained():
    """Every lu_/LU_ name in lu_guest.h's code is declared there; it has no
    functions (the C core's prototypes are in lu_core.h)."""
    guest = declared(GUEST)
    used = {w for w in words(code(GUEST.read_text())) if w.lower().startswith("lu_")}
    assert used <= set(guest), sorted(used - set(guest))
    assert "function" not in guest.values(), guest


def test_guest_structs_hold_no_host_pointers():
    """What lives in guest memory holds guest frame numbers and values, never
    a pointer into the host process (the hypervisor's descriptors do)."""
    def pointers(ctype, where):
        if ctype.kind == "pointer":
            yield where
        elif ctype.kind == "array":
            yield from pointers(ctype.item, where + "[]")
        elif ctype.kind == "struct":
            for name, field in ctype.fields:
                yield from pointers(field.type, "%s.%s" % (where, name))

    structs = [n for n, kind in declared(GUEST).items() if kind == "struct"]
    assert structs
    for name in structs:
        assert not list(pointers(ffi.typeof("struct " + name), name))
    # The check finds one where there is one.
    assert list(pointers(ffi.typeof("struct lu_vcpu"), "lu_vcpu"))


def test_core_header_includes_guest_header_and_repeats_none_of_it():
    assert re.search(r'^#include "lu_guest.h"$', CORE.read_text(), re.M)
    assert not set(declared(CORE)) & set(declared(GUEST))


def test_cffi_module_has_every_name_of_its_headers():
    """csrc/build_core.py cdefs all four headers: every struct and enum
    type, and exactly the enumerators, functions and (the NIC's hardware
    header, as the IOMMU's, keeps #defines) constants they declare."""
    names = {**declared(XEN_ABI), **declared(GUEST), **declared(NIC), **declared(CORE)}
    for name, kind in names.items():
        if kind in ("struct", "enum"):
            ffi.typeof("%s %s" % (kind, name))
    defines = set(re.findall(r"^#define (LU_\w+) ", NIC.read_text(), re.M))
    assert set(dir(lib)) == {n for n, kind in names.items() if kind in ("enumerator", "function")} | defines
    assert ffi.sizeof("struct lu_ioreq") == 32 and ffi.sizeof("struct lu_sring") == 2112
    assert ffi.sizeof("struct lu_guest_info") == 3152 and ffi.sizeof("struct lu_frame") == 16


def _syntax_check(tmp_path, headers, body, include_dir):
    if CC is None:
        pytest.skip("no C compiler")
    src = tmp_path / "t.c"
    src.write_text("#include <stdint.h>\n" + "".join('#include "%s"\n' % h for h in headers)
                   + body)
    proc = subprocess.run([CC, "-std=gnu11", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                           "-I", str(include_dir), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_guest_header_compiles_alone(tmp_path):
    """With nothing but <stdint.h>, in a directory holding no other header,
    included twice (its guard), with Xen's sizes and offsets."""
    alone = tmp_path / "inc"
    alone.mkdir()
    shutil.copy(GUEST, alone)
    _syntax_check(tmp_path, ["lu_guest.h", "lu_guest.h"], """
_Static_assert(sizeof(struct lu_ioreq) == 32, "ioreq");
_Static_assert(__builtin_offsetof(struct lu_ioreq, vp_eport) == 24, "vp_eport");
_Static_assert(__builtin_offsetof(struct lu_sring, ring) == 64, "ring header");
_Static_assert(sizeof(struct lu_sring) == 64 + 16 * LU_RING_SIZE, "ring");
_Static_assert(sizeof(struct lu_guest_info) == 3152, "info page");
int main(void) { return LU_IOREQ_NONE + LU_GUEST_IDLE - 1; }
""", alone)


def test_both_headers_compile_in_either_order(tmp_path):
    for order in (["lu_guest.h", "lu_core.h"], ["lu_core.h", "lu_guest.h"]):
        _syntax_check(tmp_path, order, "int main(void) { return LU_USE_FREE + LU_IOREQ_NONE; }\n",
                      CSRC)
