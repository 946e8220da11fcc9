"""The privcmd bridge (`hyperv-sim run`), as a wrapped tool sees it: a PV
control domain of the simulated host -- /proc/xen, /dev/xen/privcmd whose
hypercalls reach the host, no /dev/xen/hypercall, Xen's CPUID leaves behind
the forced-emulation prefix -- and never this machine's network
interfaces.  Expected values are Xen's and Linux's, written out here."""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO, installed_command, one_line_error, run_cli


def bridged(host, *argv, **kw):
    return run_cli("hyperv-sim", "run", "--", *argv, state_dir=host.state_dir, **kw)


PROBE = textwrap.dedent("""
    import errno, fcntl, os, struct
    print(open("/proc/xen/capabilities").read().strip(), os.path.isdir("/proc/xen"))
    try:
        os.open("/dev/xen/hypercall", os.O_RDWR)
    except OSError as e:
        print("hypercall", errno.errorcode[e.errno])
    fd = os.open("/dev/xen/privcmd", os.O_RDWR)
    # IOCTL_PRIVCMD_HYPERCALL: xen_version(XENVER_version, NULL)
    print("version", hex(fcntl.ioctl(fd, 0x305000, bytearray(struct.pack("<6Q", 17, 0, 0, 0, 0, 0)), True)))
    # IOCTL_PRIVCMD_HYPERCALL: an unknown hypercall is the hypervisor's -ENOSYS
    try:
        fcntl.ioctl(fd, 0x305000, bytearray(struct.pack("<6Q", 999, 0, 0, 0, 0, 0)), True)
    except OSError as e:
        print("unknown", errno.errorcode[e.errno])
    # IOCTL_PRIVCMD_MMAP (_IOC(_IOC_NONE, 'P', 2, 16)): not there
    try:
        fcntl.ioctl(fd, (16 << 16) | (ord("P") << 8) | 2, bytearray(16), True)
    except OSError as e:
        print("mmap", errno.errorcode[e.errno])
    print("dir", os.environ.get("HYPERV_SIM_DIR"))
""")


def test_a_wrapped_tool_sees_a_pv_control_domain(host):
    res = bridged(host, sys.executable, "-c", PROBE)
    assert res.returncode == 0, res
    assert res.stdout.splitlines() == [
        "control_d True", "hypercall ENOENT", "version 0x40012", "unknown ENOSYS",
        "mmap ENOTTY", "dir None"]


def test_xen_cpuid_leaves_and_the_programs_own_sigill(host, tmp_path):
    cc = shutil.which("cc")
    assert cc, "a C compiler is needed (tools/ensure-tools.sh installs gcc)"
    probe = tmp_path / "cpuid_probe"
    subprocess.run([cc, "-O1", "-o", str(probe), str(REPO / "tests" / "probes" / "cpuid_probe.c")],
                   check=True)
    leaves = ["40000000: 40000005 566e6558 65584d4d 4d4d566e",   # max leaf, "XenVMMXenVMM"
              "40000001: 00040012 00000000 00000000 00000000",   # 4.18
              "40000002: 00000001 40000000 00000001 00000000"]   # 1 page, MSR, PT_UPDATE_PRESERVE_AD
    own = bridged(host, str(probe), "own")
    assert (own.returncode, own.stdout.splitlines()) == (0, leaves + ["own handler ran 1 time(s)"]), own
    # No handler of its own: an ordinary SIGILL does what it would have done.
    plain = bridged(host, str(probe))
    assert (plain.returncode, plain.stdout.splitlines()) == (-4, leaves), plain
    # Outside the bridge the prefix is an ordinary ud2: the program's handler.
    bare = subprocess.run([str(probe), "own"], capture_output=True, text=True)
    assert bare.stdout.splitlines()[0:1] != leaves[0:1]


def test_run_says_what_is_wrong_in_one_line(host, tmp_path):
    one_line_error(bridged(host, "no-such-command-here"), "hyperv-sim", "command not found",
                   status=127)
    res = run_cli("hyperv-sim", "run", "--", "true", state_dir=tmp_path / "nothing")
    one_line_error(res, "hyperv-sim", "no hypervisor")


NET_PROBE = textwrap.dedent("""
    import ctypes, fcntl, socket, struct
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    req = struct.pack("16sH14x", b"v0", 0)          # ifr_flags = 0: down
    try:
        fcntl.ioctl(s, 0x8914, req)                    # SIOCSIFFLAGS through libc
        print("ioctl changed it")
    except OSError as e:
        print("ioctl", e.errno)
    buf = ctypes.create_string_buffer(req, 40)
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.syscall(16, s.fileno(), 0x8914, buf)  # SYS_ioctl, around the wrapper
    print("syscall", ret, ctypes.get_errno())
""")


def test_no_wrapped_tool_changes_this_machines_network_interfaces(host, xen_artifacts):
    """In a network namespace of its own (so that a failure here could only
    take a veth pair down), every way a tool has to take an interface down
    is refused: kexec's ifdown (an exec without -x), libc's ioctl, the bare
    system call, and iproute2's netlink."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        pytest.fail("unshare (util-linux) and ip (iproute2) are needed: tools/ensure-tools.sh")
    kexec = xen_artifacts.root / "sbin" / "kexec"
    libs = xen_artifacts.root / "usr" / "lib" / "x86_64-linux-gnu"
    run = [installed_command("hyperv-sim"), "run", "--"]
    script = " ; ".join([
        "ip link add v0 type veth peer name v1 && ip link set v0 up || exit 99",
        "LD_LIBRARY_PATH=%s %s %s --exec-live-update 2>&1" % (libs, " ".join(run), kexec),
        "%s %s -c '%s'" % (" ".join(run), sys.executable, NET_PROBE.replace("'", "'\\''")),
        "%s ip link set v0 down 2>&1; echo ip $?" % " ".join(run),
        "ip -o link show v0",
    ])
    prefix = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    res = subprocess.run(prefix + ["sh", "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, HYPERV_SIM_DIR=str(host.state_dir)), timeout=120)
    assert res.returncode == 0, res
    out = res.stdout
    # kexec's ifdown stops at the first interface refused (v0 or v1: the
    # kernel's order).
    assert re.search(r"^hyperv-sim run: refused to change the flags of network interface v[01] "
                     r"on this machine \(kexec takes interfaces down before an exec unless -x is "
                     r"given\)$", out, re.M), out
    assert "ioctl 1\n" in out                       # EPERM, with the bridge's message
    assert "syscall -1 1\n" in out                  # EPERM from the kernel: no CAP_NET_ADMIN
    assert "ip 2\n" in out or "ip 1\n" in out       # RTNETLINK: Operation not permitted
    assert "Operation not permitted" in out
    assert "ioctl changed it" not in out
    link = out.strip().splitlines()[-1]
    assert "v0@v1" in link and ",UP" in link, link  # still up
