"""kexec_op over the privcmd socket, as kexec-lu issues it: ranges,
load / unload / status for every type, and Xen's validation rules."""
import hashlib
import os
import stat
import time

import pytest

from xen_public import abi
from kexec_lu.errors import HypercallError
from kexec_lu.hypercall import handle
from xen_public._xen_abi import ffi
from xen_public.units import MiB

from helpers import boot_host, loaded_images, read_ram, stop_host

PAGE = abi.PAGE_SIZE


def lu_window(client):
    lu_start, lu_size = client.get_range(abi.KEXEC_RANGE_MA_LIVEUPDATE)
    xen_start, xen_size = client.get_range(abi.KEXEC_RANGE_MA_XEN)
    return lu_start, lu_size, xen_start, xen_size


def test_every_range_answers_like_xen_on_x86(host):
    c = host.client
    lu_start, lu_size, xen_start, xen_size = lu_window(c)
    assert lu_size == 64 * MiB and lu_start + lu_size == xen_start
    assert xen_start % (2 * MiB) == 0 and xen_size == 3 * MiB
    assert c.get_range(abi.KEXEC_RANGE_MA_CRASH) == (0, 0)        # no crashkernel=
    nr_cpus = host.toolstack("info")["nr_cpus"]
    notes = [c.get_range(abi.KEXEC_RANGE_MA_CPU, n) for n in range(nr_cpus)]
    assert len({s for s, _ in notes}) == nr_cpus and all(z > 0 for _, z in notes)
    with pytest.raises(HypercallError) as e:
        c.get_range(abi.KEXEC_RANGE_MA_CPU, nr_cpus)
    assert e.value.errno == abi.EINVAL
    for rid in (abi.KEXEC_RANGE_MA_XENHEAP, abi.KEXEC_RANGE_MA_BOOT_PARAM,
                abi.KEXEC_RANGE_MA_EFI_MEMMAP, 99):
        with pytest.raises(HypercallError) as e:
            c.get_range(rid)
        assert e.value.errno == abi.EINVAL
    start, size = c.get_range(abi.KEXEC_RANGE_MA_VMCOREINFO)
    assert read_ram(host, start, size).startswith(b"VMCOREINFO_XEN\n")


def lu_segments(client, image_bytes=b"\x90" * 5000):
    lu_start, lu_size, xen_start, xen_size = lu_window(client)
    dest = xen_start
    return [(b"boot", dest - PAGE, PAGE), (image_bytes, dest, 3 * MiB)], dest - PAGE


def test_liveupdate_load_is_staged_and_replaces_atomically(host):
    c = host.client
    free0 = host.toolstack("info")["free_memory"]
    segs, entry = lu_segments(c)
    assert c.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE) == 0
    c.kexec_load(abi.KEXEC_TYPE_LIVEUPDATE, abi.EM_X86_64, entry, segs)
    assert c.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE) == 1
    assert c.kexec_status(abi.KEXEC_TYPE_DEFAULT) == 0
    img = loaded_images(host)["liveupdate"]
    expect = hashlib.sha256()
    for data, dest, size in sorted(segs, key=lambda s: s[1]):
        expect.update(dest.to_bytes(8, "little") + data + bytes(size - len(data)))
    assert img["sha256"] == expect.hexdigest()           # trailing part zeroed
    assert all(s["staged"] for s in img["segments"])
    # The running Xen's image is untouched until exec.
    assert read_ram(host, segs[1][1], 5000) != segs[1][0]
    staged_cost = free0 - host.toolstack("info")["free_memory"]
    assert staged_cost == PAGE + 3 * MiB
    # A second load replaces the first; the first's staging is freed.
    segs2, _ = lu_segments(c, b"\xcc" * 100)
    c.kexec_load(abi.KEXEC_TYPE_LIVEUPDATE, abi.EM_X86_64, entry, segs2)
    assert loaded_images(host)["liveupdate"]["sha256"] != img["sha256"]
    assert free0 - host.toolstack("info")["free_memory"] == staged_cost
    c.kexec_unload(abi.KEXEC_TYPE_LIVEUPDATE)
    assert c.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE) == 0
    assert host.toolstack("info")["free_memory"] == free0
    c.kexec_unload(abi.KEXEC_TYPE_LIVEUPDATE)            # nothing loaded: still 0


def test_null_buffer_segments_are_mapped_only(host):
    """kexec-tools' identity map of the first MiB: NULL buffers, which Xen
    maps and nothing more (kimage.c) -- no range check, no staging, no
    zeroing, not in the digest, nothing scrubbed on unload."""
    c = host.client
    free0 = host.toolstack("info")["free_memory"]
    segs, entry = lu_segments(c)
    low = read_ram(host, 0, MiB)
    c.kexec_load(abi.KEXEC_TYPE_LIVEUPDATE, abi.EM_X86_64, entry, [(None, 0, MiB)] + segs)
    img = loaded_images(host)["liveupdate"]
    assert [(s["dest"], s["mapped_only"], s["staged"]) for s in img["segments"]] == [
        (0, True, False), (entry, False, True), (entry + PAGE, False, True)]
    expect = hashlib.sha256()
    for data, dest, size in sorted(segs, key=lambda s: s[1]):
        expect.update(dest.to_bytes(8, "little") + data + bytes(size - len(data)))
    assert img["sha256"] == expect.hexdigest()
    assert free0 - host.toolstack("info")["free_memory"] == PAGE + 3 * MiB
    assert read_ram(host, 0, MiB) == low
    c.kexec_unload(abi.KEXEC_TYPE_LIVEUPDATE)
    assert host.toolstack("info")["free_memory"] == free0


def test_null_buffer_segments_still_obey_alignment_overlap_and_size(host):
    c = host.client
    segs, entry = lu_segments(c)
    LU, X86 = abi.KEXEC_TYPE_LIVEUPDATE, abi.EM_X86_64
    expect_errno(abi.EADDRNOTAVAIL, c.kexec_load, LU, X86, entry, [(None, 8, PAGE)] + segs)
    expect_errno(abi.EINVAL, c.kexec_load, LU, X86, entry, [(None, entry - PAGE, 2 * PAGE)] + segs[1:])
    # The entry must lie in a segment that holds bytes.
    expect_errno(abi.EINVAL, c.kexec_load, LU, X86, 0, [(None, 0, MiB)] + segs)
    assert c.kexec_status(LU) == 0


def expect_errno(errno_value, fn, *args):
    with pytest.raises(HypercallError) as e:
        fn(*args)
    assert e.value.errno == errno_value, str(e.value)


def test_bad_loads_are_refused_and_change_nothing(host):
    c = host.client
    segs, entry = lu_segments(c)
    c.kexec_load(abi.KEXEC_TYPE_LIVEUPDATE, abi.EM_X86_64, entry, segs)
    before = loaded_images(host)
    free = host.toolstack("info")["free_memory"]
    lu_start, lu_size, xen_start, xen_size = lu_window(c)
    LU = abi.KEXEC_TYPE_LIVEUPDATE
    bad = {
        "unaligned dest": (abi.EADDRNOTAVAIL, LU, abi.EM_X86_64, entry, [(b"x", entry + 8, PAGE)]),
        "unaligned size": (abi.EADDRNOTAVAIL, LU, abi.EM_X86_64, entry, [(b"x", entry, PAGE + 8)]),
        "buf bigger than dest": (abi.EINVAL, LU, abi.EM_X86_64, entry, [(bytes(PAGE + 1), entry, PAGE)]),
        "overlap": (abi.EINVAL, LU, abi.EM_X86_64, entry,
                    [(b"a", entry, 2 * PAGE), (b"b", entry + PAGE, PAGE)]),
        "outside window": (abi.EADDRNOTAVAIL, LU, abi.EM_X86_64, xen_start + xen_size,
                           [(b"a", xen_start + xen_size, PAGE)]),
        "past xen#1's end": (abi.EADDRNOTAVAIL, LU, abi.EM_X86_64, xen_start,
                             [(b"a", xen_start, xen_size + PAGE)]),
        "breadcrumb page": (abi.EADDRNOTAVAIL, LU, abi.EM_X86_64, lu_start, [(b"a", lu_start, PAGE)]),
        "entry in no segment": (abi.EINVAL, LU, abi.EM_X86_64, entry + 2 * PAGE, [(b"a", entry, PAGE)]),
        "unknown type": (abi.EINVAL, 7, abi.EM_X86_64, entry, segs),
        "not x86": (abi.EINVAL, LU, 40, entry, segs),
        "too many segments": (abi.EINVAL, LU, abi.EM_X86_64, entry,
                              [(b"a", entry - i * PAGE, PAGE) for i in range(17)]),
        "crash without region": (abi.EINVAL, abi.KEXEC_TYPE_CRASH, abi.EM_X86_64, entry, segs),
        "no memory to stage": (abi.ENOMEM, abi.KEXEC_TYPE_DEFAULT, abi.EM_X86_64, PAGE,
                               [(b"a", PAGE, 1900 * MiB)]),   # in RAM, more than is free
    }
    for name, (errno_value, *args) in bad.items():
        expect_errno(errno_value, c.kexec_load, *args)
        assert loaded_images(host) == before, name
        assert host.toolstack("info")["free_memory"] == free, name
    # Where kexec-tools puts a new Xen (at xen#1's start), one larger than
    # xen#1's slot is refused naming how far it runs into memory in use.
    assert ("segment 0: [0x%x, 0x%x) runs 0x1000 bytes past the end of the running "
            "hypervisor's image at 0x%x" % (xen_start, xen_start + xen_size + PAGE,
                                            xen_start + xen_size)) in "\n".join(host.toolstack("dmesg"))


def test_handle_outside_the_callers_buffers_is_efault(host):
    c = host.client
    load = ffi.new("xen_kexec_load_t *", {"type": 2, "arch": abi.EM_X86_64, "nr_segments": 1,
                                           "segments": 0xdead0000, "entry_maddr": 0})
    ret = c._hypercall(abi.HYPERVISOR_kexec_op, [abi.KEXEC_CMD_kexec_load, handle(load)])
    assert ret == -abi.EFAULT
    assert c.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE) == 0


def test_unknown_hypercall_is_enosys(host):
    assert host.client._hypercall(999, [0]) == -abi.ENOSYS


def test_xen_version_and_command_line(host):
    assert host.client.version() == (4, 18, ".0")       # built as "4.18": Xen's XEN_EXTRAVERSION ?= .0
    # As booted (the tests' helpers run guests flat out).
    assert host.client.commandline() == "liveupdate=64M dom0_mem=256M workload_rate=max"


def test_crash_image_goes_straight_to_its_destination(tmp_path, sim_images):
    state = tmp_path / "crash"
    host = boot_host(state, sim_images["4.18"], cmdline="liveupdate=64M dom0_mem=256M crashkernel=64M")
    try:
        c = host.client
        start, size = c.get_range(abi.KEXEC_RANGE_MA_CRASH)
        assert size == 64 * MiB
        data = os.urandom(3 * PAGE + 17)
        c.kexec_load(abi.KEXEC_TYPE_CRASH, abi.EM_X86_64, start, [(data, start, 8 * PAGE)])
        assert read_ram(host, start, 8 * PAGE) == data + bytes(8 * PAGE - len(data))
        expect_errno(abi.EADDRNOTAVAIL, c.kexec_load, abi.KEXEC_TYPE_CRASH, abi.EM_X86_64,
                     start + size, [(data, start + size, 8 * PAGE)])
        c.kexec_unload(abi.KEXEC_TYPE_CRASH)
        assert read_ram(host, start, 8 * PAGE) == bytes(8 * PAGE)
        # A NULL-buffer segment outside the region (over the running
        # hypervisor's image here) is mapped, never written or scrubbed.
        xen_start, _ = c.get_range(abi.KEXEC_RANGE_MA_XEN)
        xen_bytes = read_ram(host, xen_start, MiB)
        c.kexec_load(abi.KEXEC_TYPE_CRASH, abi.EM_X86_64, start,
                     [(None, xen_start, MiB), (data, start, 8 * PAGE)])
        c.kexec_unload(abi.KEXEC_TYPE_CRASH)
        assert read_ram(host, xen_start, MiB) == xen_bytes
    finally:
        stop_host(state)


def test_exec_is_refused_until_live_update_exists(host):
    expect_errno(abi.ENOENT, host.client.kexec_exec, abi.KEXEC_TYPE_LIVEUPDATE)


def test_privcmd_socket_and_state_dir_are_private(host):
    sock = host.state_dir / "privcmd"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(host.state_dir.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((host.state_dir / "ram").stat().st_mode) == 0o600



NOBODY = 65534
# A client in C: another user cannot run this machine's Python (it lives in
# root's home), and the check is about the socket, not the client.
PROBE_C = r"""
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/un.h>
int main(int argc, char **argv) {
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    const char *req = "T{\"op\": \"list\"}";
    uint32_t len = strlen(req);
    char buf[16];
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    signal(SIGPIPE, SIG_IGN);   /* the server may close before the request is written */
    strncpy(a.sun_path, argv[1], sizeof(a.sun_path) - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) { printf("CONNECT %s\n", strerror(errno)); return 0; }
    if (write(fd, &len, 4) != 4 || write(fd, req, len) != (ssize_t)len) {
        printf(errno == EPIPE || errno == ECONNRESET ? "CLOSED\n" : "WRITE %s\n", strerror(errno));
        return 0;
    }
    printf(read(fd, buf, sizeof(buf)) > 0 ? "ANSWERED\n" : "CLOSED\n");
    return 0;
}
"""


def _as_nobody(probe, sock):
    import subprocess
    return subprocess.run([probe, sock], user=NOBODY, capture_output=True, text=True,
                          timeout=60).stdout.strip()


class _Log:
    def __init__(self):
        self.lines = []

    def log(self, fmt, *args):
        self.lines.append(fmt % args)


class _Toolstack:
    def handle(self, request):
        return ["answered"]


def test_a_peer_of_another_uid_is_refused_by_its_credentials(tmp_path):
    """The SO_PEERCRED check alone, with no second user needed: a server that
    belongs to another uid refuses this process, and serves its owner."""
    import threading
    from hyperv_sim.privcmd import PrivcmdServer
    from xen_public.errors import HypervisorUnavailable
    from xen_public.privcmd import SocketPrivcmd
    log = _Log()
    server = PrivcmdServer(str(tmp_path / "privcmd"), None, _Toolstack(), log)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = SocketPrivcmd(str(tmp_path))
        assert client.toolstack("list") == ["answered"]         # the owner gets in
        server.owner = os.geteuid() + 1
        with pytest.raises(HypervisorUnavailable, match="closed the connection|hung up"):
            client.toolstack("list")
        assert log.lines == ["privcmd: refused pid %d uid %d (owner is uid %d)"
                             % (os.getpid(), os.geteuid(), os.geteuid() + 1)]
    finally:
        server.close()
        thread.join(timeout=10)


# With root, a real second user, as an attacker would be.
@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a second uid needs root; "
                    "test_a_peer_of_another_uid_is_refused_by_its_credentials covers the check")
def test_only_the_owner_gets_in(sim_images):
    import shutil
    import subprocess
    import tempfile
    # A state dir another user can reach, so both the socket's mode and the
    # peer-credential check are what stands in the way.
    base = tempfile.mkdtemp(prefix="kexec-lu-uid-")
    os.chmod(base, 0o755)
    state = os.path.join(base, "host")
    os.mkdir(state, 0o755)
    probe = os.path.join(base, "probe")
    with open(probe + ".c", "w") as f:
        f.write(PROBE_C)
    subprocess.run(["cc", "-o", probe, probe + ".c"], check=True)
    sock = os.path.join(state, "privcmd")
    try:
        host = boot_host(state, sim_images["4.18"])
        assert _as_nobody(probe, sock) == "CONNECT Permission denied"       # mode 0600
        os.chmod(sock, 0o666)
        assert _as_nobody(probe, sock) == "CLOSED"                          # SO_PEERCRED
        assert any("refused pid" in l and "uid %d" % NOBODY in l for l in host.toolstack("dmesg"))
        os.chmod(sock, 0o600)
        assert host.toolstack("list")                                       # the owner still gets in
    finally:
        stop_host(state)
        shutil.rmtree(base, ignore_errors=True)


class _SlowShutdown:
    """A toolstack whose shutdown stops the server at once and answers late,
    as a busy hypervisor does."""

    def __init__(self):
        self.server = None

    def handle(self, request):
        self.server.stopping.set()
        time.sleep(0.3)
        return ["stopping"]


def test_the_shutdown_request_is_answered_before_the_server_ends(tmp_path):
    """The server's loop ends as soon as shutdown is asked; drain() (what
    the hypervisor calls before its process ends) waits for the answer to
    go out, so `hyperv-sim shutdown` never sees the connection closed."""
    import threading
    from hyperv_sim.privcmd import PrivcmdServer
    from xen_public.privcmd import SocketPrivcmd
    toolstack = _SlowShutdown()
    server = toolstack.server = PrivcmdServer(str(tmp_path / "privcmd"), None, toolstack, _Log())
    answers = []
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    client = threading.Thread(target=lambda: answers.append(SocketPrivcmd(str(tmp_path)).toolstack("shutdown")),
                              daemon=True)
    client.start()
    loop.join(timeout=10)
    assert not loop.is_alive() and answers == []        # the loop ended before the answer
    t0 = time.monotonic()
    server.close()
    server.drain()
    # drain() returned only once the request was served: the answer was
    # still being made when the loop ended, so it waited for it.
    assert time.monotonic() - t0 >= 0.05
    client.join(timeout=1)
    assert answers == [["stopping"]]
