"""The hypercall ABI by address: the socket carries a struct privcmd_hypercall
and nothing else; the hypervisor follows its guest handles into the calling
process's memory, as Xen's copy_from_guest / copy_to_guest do.  A handle
that cannot be followed is -EFAULT and changes nothing; a caller that is
gone gets nothing written; the host carries on."""
import ctypes
import mmap
import os
import signal
import socket
import subprocess
import struct
import sys
import textwrap

import pytest

from hyperv_sim.hypercalls import CallerMemory, Fault
from kexec_lu.hypercall import handle
from xen_public import abi, privcmd as wire
from xen_public._xen_abi import ffi
from xen_public.units import MiB

from helpers import wait_for

PAGE = abi.PAGE_SIZE
PROT_NONE = 0                   # sys/mman.h; the mmap module has only READ, WRITE, EXEC
_libc = ctypes.CDLL(None, use_errno=True)


def pages(n):
    """n fresh pages of this process, and their address."""
    m = mmap.mmap(-1, n * PAGE)
    return m, handle(ffi.from_buffer(m))


def protect(addr, prot):
    assert _libc.mprotect(ctypes.c_void_p(addr), PAGE, prot) == 0, os.strerror(ctypes.get_errno())


def hypercall(host, op, *args):
    """The raw return value: kexec-lu's client, without its error mapping."""
    return host.client._hypercall(op, list(args))


def get_range_at(host, addr):
    return hypercall(host, abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_get_range, addr)


def console(host):
    return host.hyperv_sim("dmesg").stdout


def test_the_wire_is_privcmd_hypercall_and_an_i64():
    """48 bytes out (op, five args), 8 back: nothing depends on the call."""
    assert ffi.sizeof("privcmd_hypercall_t") == 48
    assert wire.encode_return(-abi.EFAULT) == (-14).to_bytes(8, "little", signed=True)
    assert wire.decode_return((2 ** 40).to_bytes(8, "little")) == 2 ** 40
    assert wire.decode_return(bytes(7)) is None and wire.decode_return(bytes(9)) is None


def test_the_hypervisor_writes_where_the_handle_points(host):
    """get_range's answer lands in this process's struct, at the address the
    call carried, one page into a fresh mapping: no copy of it travels."""
    m, base = pages(2)
    rng = ffi.cast("xen_kexec_range_t *", base + PAGE + 40)
    rng.range = abi.KEXEC_RANGE_MA_XEN
    assert get_range_at(host, base + PAGE + 40) == 0
    assert (rng.start, rng.size) == host.client.get_range(abi.KEXEC_RANGE_MA_XEN)
    assert rng.size == 3 * MiB
    assert m[:PAGE + 40] == bytes(PAGE + 40)                # nothing before it touched


@pytest.mark.parametrize("where", ["unmapped", "read-only", "straddles an unmapped page"])
def test_a_bad_output_handle_is_efault_and_the_host_carries_on(host, where):
    m, base = pages(2)
    at = base + 64
    if where == "unmapped":
        at = base + PAGE
        protect(base + PAGE, PROT_NONE)
    elif where == "straddles an unmapped page":
        at = base + PAGE - 8                                # range, nr readable; start, size not
        protect(base + PAGE, PROT_NONE)
    rng = ffi.cast("xen_kexec_range_t *", at)
    if where != "unmapped":
        rng.range = abi.KEXEC_RANGE_MA_XEN
    if where == "read-only":
        protect(base, mmap.PROT_READ)
    assert get_range_at(host, at) == -abi.EFAULT
    if where == "read-only":
        protect(base, mmap.PROT_READ | mmap.PROT_WRITE)
        assert (rng.size, rng.start) == (0, 0)              # nothing of the answer arrived
    if where == "straddles an unmapped page":
        assert (rng.range, rng.nr) == (abi.KEXEC_RANGE_MA_XEN, 0)
    # The host answers the next call as before, and said why in its log.
    assert host.client.get_range(abi.KEXEC_RANGE_MA_XEN)[1] == 3 * MiB
    assert "hypercall %d: " % abi.HYPERVISOR_kexec_op in console(host)
    assert ("not mapped" if where != "read-only" else "not mapped writable") in console(host)


def test_segment_bytes_at_a_bad_address_load_nothing(host):
    """kexec_load follows two levels of handles (the segment array, then
    each segment's bytes): a bad one at either level is -EFAULT, nothing
    is loaded and no memory is taken."""
    c = host.client
    free = host.toolstack("info")["free_memory"]
    lu_start, lu_size = c.get_range(abi.KEXEC_RANGE_MA_LIVEUPDATE)
    m, base = pages(2)
    protect(base + PAGE, PROT_NONE)
    segs = ffi.new("xen_kexec_segment_t[1]")
    segs[0].buf, segs[0].buf_size = base + PAGE - 16, 64     # runs into the unmapped page
    segs[0].dest_maddr, segs[0].dest_size = lu_start + MiB, PAGE
    for seg_handle in (handle(segs), base + PAGE):           # bytes bad; then the array itself
        load = ffi.new("xen_kexec_load_t *", {"type": abi.KEXEC_TYPE_LIVEUPDATE, "arch": abi.EM_X86_64,
                                               "nr_segments": 1, "segments": seg_handle,
                                               "entry_maddr": lu_start + MiB})
        ret = hypercall(host, abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_load, handle(load))
        assert ret == -abi.EFAULT
        assert c.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE) == 0
        assert host.toolstack("info")["free_memory"] == free


@pytest.mark.parametrize("size", [0, 47, 49, 48 + 16])
def test_a_hypercall_frame_of_another_size_is_dropped(host, size):
    """Only a privcmd_hypercall is a hypercall request: the old region
    table after it, or a short struct, is malformed and dropped, logged."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(host.privcmd.path)
    wire.send_frame(s, wire.KIND_HYPERCALL, bytes(size))
    s.settimeout(10)
    assert s.recv(16) == b""
    s.close()
    assert "hypercall request of %d bytes, not a privcmd_hypercall" % size in console(host)
    assert host.client.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE) == 0


CALLER = textwrap.dedent("""
    import os, sys
    from xen_public import abi, privcmd as wire
    from xen_public._xen_abi import ffi
    rng = ffi.new("xen_kexec_range_t *", {"range": abi.KEXEC_RANGE_MA_XEN})
    c = ffi.new("privcmd_hypercall_t *")
    c.op, c.arg[0], c.arg[1] = abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_get_range, int(ffi.cast("uintptr_t", rng))
    p = wire.SocketPrivcmd(sys.argv[1])
    s = p._connect()
    wire.send_frame(s, wire.KIND_HYPERCALL, bytes(ffi.buffer(c)))
    os._exit(0)          # gone before the hypervisor reads its memory
""")


def test_a_caller_that_exits_mid_call_gets_nothing_and_the_host_carries_on(host):
    """The hypervisor is stopped while a caller sends its hypercall and
    exits; resumed, it finds the caller gone: -EFAULT to nobody, one log
    line, and the next caller is served."""
    from hyperv_sim.bootloader import running_pid
    xen = running_pid(str(host.state_dir))
    os.kill(xen, signal.SIGSTOP)
    try:
        caller = subprocess.Popen([sys.executable, "-c", CALLER, str(host.state_dir)])

        def exited():          # a zombie: exited, not yet reaped (its pid stays ours)
            with open("/proc/%d/stat" % caller.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        wait_for(exited, "the caller to exit")
    finally:
        os.kill(xen, signal.SIGCONT)
    wait_for(lambda: "has exited" in console(host), "the hypervisor to notice")
    caller.wait()
    assert "the caller (pid %d) has exited" % caller.pid in console(host)
    assert host.client.get_range(abi.KEXEC_RANGE_MA_XEN)[1] == 3 * MiB


def test_nothing_is_written_once_the_caller_has_exited():
    """A pid is recycled; the pidfd is not.  Here the caller's pid is taken
    by this very process (the worst case: the new owner's memory has the
    same address mapped); the pidfd says the caller exited, and neither a
    read nor a write goes through."""
    child = subprocess.Popen(["sleep", "60"])
    pidfd = os.pidfd_open(child.pid)
    child.kill()
    child.wait()
    buf = ffi.new("char[16]", b"untouched")
    mem = CallerMemory(os.getpid(), pidfd)
    try:
        with pytest.raises(Fault, match="has exited"):
            mem.copy_to(handle(buf), b"overwritten\0")
        with pytest.raises(Fault, match="has exited"):
            mem.copy_from(handle(buf), 16)
    finally:
        os.close(pidfd)
    assert ffi.string(buf) == b"untouched"
    # The same calls with a live caller's pidfd go through.
    live = CallerMemory(os.getpid(), os.pidfd_open(os.getpid()))
    live.copy_to(handle(buf), b"written\0")
    assert ffi.string(buf) == b"written" and live.copy_from(handle(buf), 7) == b"written"
    os.close(live.pidfd)


def test_caller_memory_rejects_ranges_no_process_has():
    mem = CallerMemory(os.getpid())
    with pytest.raises(Fault, match="not mapped"):
        mem.copy_from(2 ** 64 - 8, 16)                  # wraps
    with pytest.raises(Fault, match="not mapped"):
        mem.copy_from(0, 8)
    assert mem.copy_from(0, 0) == b""                   # an empty copy needs no memory


def test_yama_grant_only_where_the_scope_needs_it(tmp_path, monkeypatch):
    """Under Yama's scope 1 a process may be read only by its ancestors,
    unless it names a ptracer: the client names the hypervisor.  Scope 0
    (or no Yama) needs nothing; 2 and 3 cannot be lifted this way."""
    calls = []

    class Libc:
        def prctl(self, *args):
            calls.append((args[0], args[1].value))
            return 0
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: Libc())
    scope = tmp_path / "ptrace_scope"
    for value, expect in (("0\n", []), ("2\n", []), ("3\n", []), ("1\n", [(0x59616D61, 4242)])):
        scope.write_text(value)
        calls.clear()
        wire.allow_memory_access(4242, str(scope))
        assert calls == expect, value
    calls.clear()
    wire.allow_memory_access(4242, str(tmp_path / "no-yama"))
    assert calls == []


# --- multicall and the machine memory map, as libxenctrl sends them -----------

def multicall(host, entries):
    """entries: [(op, args)] -> (return value, [per-entry results, signed])."""
    arr = ffi.new("multicall_entry_t[]", max(len(entries), 1))
    for i, (op, args) in enumerate(entries):
        arr[i].op = op
        for j, a in enumerate(args):
            arr[i].args[j] = a
    ret = hypercall(host, abi.HYPERVISOR_multicall, handle(arr), len(entries))
    return ret, [ffi.cast("int64_t", arr[i].result) for i in range(len(entries))]


def test_multicall_runs_each_entry_and_writes_its_result(host):
    ret, results = multicall(host, [
        (abi.HYPERVISOR_memory_op, [abi.XENMEM_maximum_ram_page, 0]),
        (abi.HYPERVISOR_xen_version, [abi.XENVER_pagesize, 0]),
        (999, [0]),
        (abi.HYPERVISOR_multicall, [0, 0]),
        (abi.HYPERVISOR_xen_version, [abi.XENVER_version, 0]),
    ])
    assert ret == 0
    assert [int(r) for r in results] == [(2 << 30) // PAGE - 1, PAGE, -abi.ENOSYS, -abi.EINVAL,
                                         (4 << 16) | 18]


def test_multicall_entries_at_a_bad_address_are_efault(host):
    m, base = pages(1)
    protect(base, PROT_NONE)
    assert hypercall(host, abi.HYPERVISOR_multicall, base, 1) == -abi.EFAULT
    assert hypercall(host, abi.HYPERVISOR_multicall, base, 0) == 0   # nothing to read


def machine_memory_map(host, nr_entries, buffer=None):
    """-> (ret, nr_entries written back, [(addr, size, type)] in the buffer)."""
    raw = ffi.new("char[]", max(nr_entries, 1) * abi.E820_ENTRY_SIZE) if buffer is None else None
    req = ffi.new("xen_memory_map_t *", {"nr_entries": nr_entries,
                                         "buffer": handle(raw) if buffer is None else buffer})
    ret = hypercall(host, abi.HYPERVISOR_memory_op, abi.XENMEM_machine_memory_map, handle(req))
    got = []
    if raw is not None:
        data = ffi.buffer(raw)[:]
        for i in range(min(req.nr_entries, nr_entries)):
            got.append(struct.unpack_from("<QQI", data, i * abi.E820_ENTRY_SIZE))
    return ret, req.nr_entries, got


def firmware_map(host):
    """A PC's E820 over the host's RAM (its end from maximum_ram_page):
    RAM, the legacy VGA/BIOS hole at 640 KiB - 1 MiB, RAM."""
    end = (host.client.max_ram_page() + 1) * PAGE
    return [(0, 0xA0000, 1), (0xA0000, 0x60000, 2), (MiB, end - MiB, 1)]


def test_machine_memory_map_is_the_firmwares(host):
    """Xen reserves its image and LU bootmem only in its boot-time copy of
    the map: dom0 sees them as RAM (kexec-tools places images there)."""
    want = firmware_map(host)
    assert machine_memory_map(host, 8) == (0, 3, want)
    assert machine_memory_map(host, 4) == (0, 3, want)          # one spare entry: enough
    assert machine_memory_map(host, 3)[0] == -abi.EINVAL        # Xen wants that spare
    assert machine_memory_map(host, 0, buffer=0) == (0, 3, [])  # NULL: the count only
    m, base = pages(1)
    protect(base, mmap.PROT_READ)
    assert machine_memory_map(host, 8, buffer=base)[0] == -abi.EFAULT


def test_machine_memory_map_shows_the_crash_region_as_ram(tmp_path, sim_images):
    from helpers import boot_host, stop_host
    h = boot_host(tmp_path / "h", sim_images["4.18"],
                  cmdline="liveupdate=64M dom0_mem=256M crashkernel=128M@0x10000000")
    try:
        assert machine_memory_map(h, 8) == (0, 3, firmware_map(h))
    finally:
        stop_host(tmp_path / "h")


def test_machine_memory_map_through_a_one_entry_multicall(host):
    """libxenctrl 4.17 sends every memory_op as a multicall of one."""
    raw = ffi.new("char[]", 8 * abi.E820_ENTRY_SIZE)
    req = ffi.new("xen_memory_map_t *", {"nr_entries": 8, "buffer": handle(raw)})
    ret, results = multicall(host, [(abi.HYPERVISOR_memory_op,
                                     [abi.XENMEM_machine_memory_map, handle(req)])])
    assert (ret, [int(r) for r in results], req.nr_entries) == (0, [0], 3)
    assert machine_memory_map(host, 8)[2][0] == struct.unpack_from("<QQI", ffi.buffer(raw)[:20])


# Every kexec_op and memory_op that follows a handle, with the struct it reads.
HANDLE_CALLS = [
    (abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_get_range, "xen_kexec_range_t"),
    (abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_load, "xen_kexec_load_t"),
    (abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_unload, "xen_kexec_unload_t"),
    (abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_status, "xen_kexec_status_t"),
    (abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec, "xen_kexec_exec_t"),
    (abi.HYPERVISOR_memory_op, abi.XENMEM_machine_memory_map, "xen_memory_map_t"),
]


@pytest.mark.parametrize("op, cmd, struct_name, where", [
    call + (where,) for call in HANDLE_CALLS for where in ("unmapped", "straddles an unmapped page")
    # A one-byte struct (unload, status) cannot straddle a page end.
    if where == "unmapped" or ffi.sizeof(call[2]) > 1])
def test_every_handle_that_cannot_be_followed_is_efault(host, op, cmd, struct_name, where):
    """The struct itself at an unmapped address, or running into an
    unmapped page: -EFAULT, nothing changes, the host answers on."""
    c = host.client
    before = (host.toolstack("info")["free_memory"], c.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE),
              host.toolstack("info")["incarnation"])
    m, base = pages(2)
    protect(base + PAGE, PROT_NONE)
    size = ffi.sizeof(struct_name)
    at = base + PAGE if where == "unmapped" else base + PAGE - max(1, size // 2)
    assert hypercall(host, op, cmd, at) == -abi.EFAULT
    assert (host.toolstack("info")["free_memory"], c.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE),
            host.toolstack("info")["incarnation"]) == before
    assert c.get_range(abi.KEXEC_RANGE_MA_XEN)[1] == 3 * MiB
