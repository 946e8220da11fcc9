"""The real Xen transport: /dev/xen/privcmd's ioctl number and argument
encoding, byte for byte, and how a host without Xen is told so."""
import struct

import pytest

from xen_public import abi
from xen_public.errors import HypervisorUnavailable
from kexec_lu.hypercall import XenClient
from xen_public.privcmd import SocketPrivcmd
from kexec_lu.xenprivcmd import IOCTL_PRIVCMD_HYPERCALL, XenPrivcmd, is_control_domain, open_transport


class FakeXen:
    """Stands in for fcntl.ioctl on /dev/xen/privcmd: records what it is
    given and answers get_range as Xen would, writing into the caller's
    struct at the address in arg[1]."""

    def __init__(self, answer=0):
        self.calls = []
        self.answer = answer

    def __call__(self, fd, request, buf, mutate):
        import ctypes
        self.calls.append((request, bytes(buf)))
        op, *args = struct.unpack("<6Q", bytes(buf))
        if op == abi.HYPERVISOR_kexec_op and args[0] == abi.KEXEC_CMD_kexec_get_range:
            rng = (ctypes.c_char * 24).from_address(args[1])
            rng_id, nr = struct.unpack_from("<ii", bytes(rng))
            rng[:] = struct.pack("<iiQQ", rng_id, nr, 0x4000000, 0xFBC00000)
        if self.answer < 0:
            raise OSError(-self.answer, "failed")
        return self.answer


@pytest.fixture
def device(tmp_path):
    dev = tmp_path / "privcmd"
    dev.write_bytes(b"")
    return str(dev)


def test_ioctl_number_is_linux_privcmd_hypercall():
    # _IOC(_IOC_NONE, 'P', 0, 48): direction 0, size 48, type 'P', number 0.
    assert IOCTL_PRIVCMD_HYPERCALL == 0x305000


def test_get_range_is_encoded_as_linux_passes_it(device):
    fake = FakeXen()
    client = XenClient(XenPrivcmd(device, ioctl=fake))
    start, size = client.get_range(abi.KEXEC_RANGE_MA_LIVEUPDATE)
    assert (start, size) == (0xFBC00000, 0x4000000)
    [(request, buf)] = fake.calls
    assert request == 0x305000
    assert len(buf) == 48
    op, cmd, arg, a2, a3, a4 = struct.unpack("<6Q", buf)
    assert (op, cmd, a2, a3, a4) == (37, 3, 0, 0, 0)
    assert arg != 0                          # the address of the caller's xen_kexec_range_t


def test_load_passes_real_addresses_of_segments_and_data(device):
    import ctypes
    seen = {}

    def ioctl(fd, request, buf, mutate):
        op, cmd, arg = struct.unpack_from("<3Q", bytes(buf))
        load = bytes((ctypes.c_char * 24).from_address(arg))
        ktype, _pad, arch, nr, segs, entry = struct.unpack("<BBHIQQ", load)
        seg = bytes((ctypes.c_char * 32).from_address(segs))
        buf_addr, buf_size, dest, dest_size = struct.unpack("<4Q", seg)
        seen.update(ktype=ktype, arch=arch, nr=nr, entry=entry, dest=dest, dest_size=dest_size,
                    data=ctypes.string_at(buf_addr, buf_size))
        return 0

    client = XenClient(XenPrivcmd(device, ioctl=ioctl))
    client.kexec_load(abi.KEXEC_TYPE_LIVEUPDATE, abi.EM_X86_64, 0xFFBFF000,
                      [(b"xen image bytes", 0xFFC00000, 0x300000)])
    assert seen == dict(ktype=2, arch=62, nr=1, entry=0xFFBFF000, dest=0xFFC00000,
                        dest_size=0x300000, data=b"xen image bytes")


def test_errno_from_privcmd_becomes_the_hypercall_error(device):
    from kexec_lu.errors import HypercallError
    client = XenClient(XenPrivcmd(device, ioctl=FakeXen(answer=-abi.EINVAL)))
    with pytest.raises(HypercallError) as e:
        client.get_range(abi.KEXEC_RANGE_MA_XENHEAP)
    assert e.value.errno == abi.EINVAL


def test_transport_choice(tmp_path, monkeypatch, device):
    caps = tmp_path / "capabilities"
    monkeypatch.delenv("HYPERV_SIM_DIR", raising=False)
    caps.write_text("control_d\n")
    assert is_control_domain(str(caps))
    assert isinstance(open_transport(capabilities=str(caps), device=device), XenPrivcmd)
    caps.write_text("\n")                    # a guest, not dom0
    assert isinstance(open_transport(capabilities=str(caps), device=device), SocketPrivcmd)
    assert not is_control_domain(str(tmp_path / "missing"))
    monkeypatch.setenv("HYPERV_SIM_DIR", str(tmp_path))
    caps.write_text("control_d\n")           # a named simulated host wins
    assert isinstance(open_transport(capabilities=str(caps), device=device), SocketPrivcmd)


def test_no_xen_here_is_said_plainly(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERV_SIM_DIR", str(tmp_path / "nothing"))
    with pytest.raises(HypervisorUnavailable, match="no Xen control domain here"):
        XenClient().get_range(abi.KEXEC_RANGE_MA_XEN)
    with pytest.raises(HypervisorUnavailable, match="cannot open"):
        XenPrivcmd(str(tmp_path / "no-device")).hypercall(bytes(48))


def test_exec_on_real_xen_triggers_and_does_not_wait_for_a_report(device, capsys):
    from kexec_lu.liveupdate import run_live_update
    fake = FakeXen()
    from kexec_lu.render import LiveUpdateProgress
    rep = run_live_update(XenClient(XenPrivcmd(device, ioctl=fake)), timeout=1,
                          progress=LiveUpdateProgress())
    assert rep["state"] == "triggered"
    # Which images the update carries is asked first (status of crash and
    # default), then the update is triggered, and nothing more.
    calls = [struct.unpack_from("<2Q", c[1]) for c in fake.calls]
    assert calls == [(abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec_status)] * 2 + \
        [(abi.HYPERVISOR_kexec_op, abi.KEXEC_CMD_kexec)]
    assert "triggered" in capsys.readouterr().out
