"""The privcmd channel to the hypervisor, as a UNIX socket.

Linux's /dev/xen/privcmd takes IOCTL_PRIVCMD_HYPERCALL with a struct
privcmd_hypercall {u64 op; u64 arg[5];}; arguments are pointers into the
caller's memory, which Xen reads and writes with copy_from/to_guest.  A socket
cannot carry pointers, so each request also carries the caller's buffers
("bounce buffers", like libxencall's) as (address, bytes) regions: the
hypervisor resolves guest handles inside them and sends them back, updated.

Frame: u32 length, u8 kind, payload.
  kind 'H' hypercall: privcmd_hypercall (48 bytes), u32 nr_regions, u32 0,
                      nr x {u64 addr, u64 len}, then the regions' bytes.
          reply:      i64 ret, u32 nr_regions, u32 0, the regions' bytes.
  kind 'T' toolstack: UTF-8 JSON request; reply: UTF-8 JSON.  Simulator-only
                      operations (xl's job: create, list, destroy, ...).
"""
import json
import os
import socket
import struct

from .errors import Busy, HypervisorUnavailable, ToolstackRefused

KIND_HYPERCALL = b"H"
KIND_TOOLSTACK = b"T"
MAX_FRAME = 512 << 20

_LEN = struct.Struct("<I")
_REGION = struct.Struct("<QQ")
_COUNT = struct.Struct("<II")
_RET = struct.Struct("<q")
SOCKET_NAME = "privcmd"


def default_state_dir():
    """Where a simulated host lives unless HYPERV_SIM_DIR says otherwise."""
    env = os.environ.get("HYPERV_SIM_DIR")
    if env:
        return env
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "hyperv-sim")


def send_frame(sock, kind, payload):
    sock.sendall(_LEN.pack(len(payload) + 1) + kind + payload)


def recv_exact(sock, n):
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed after %d of %d bytes" % (got, n))
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(sock):
    """(kind, payload), or (None, None) on a clean end of stream."""
    head = sock.recv(_LEN.size, socket.MSG_WAITALL)
    if not head:
        return None, None
    if len(head) < _LEN.size:
        raise ConnectionError("truncated frame header")
    (length,) = _LEN.unpack(head)
    if not 1 <= length <= MAX_FRAME:
        raise ConnectionError("frame length %d out of range" % length)
    body = recv_exact(sock, length)
    return body[:1], body[1:]


def encode_hypercall(call_bytes, regions):
    """regions: list of (addr, bytes)."""
    parts = [call_bytes, _COUNT.pack(len(regions), 0)]
    parts += [_REGION.pack(addr, len(data)) for addr, data in regions]
    parts += [bytes(data) for _, data in regions]
    return b"".join(parts)


def decode_hypercall(payload, call_size):
    """-> (call_bytes, [(addr, bytearray)]); raises ValueError if malformed."""
    if len(payload) < call_size + _COUNT.size:
        raise ValueError("hypercall request too short")
    call = payload[:call_size]
    nr, _ = _COUNT.unpack_from(payload, call_size)
    off = call_size + _COUNT.size
    if nr > 64 or off + nr * _REGION.size > len(payload):
        raise ValueError("bad region table")
    heads = [_REGION.unpack_from(payload, off + i * _REGION.size) for i in range(nr)]
    off += nr * _REGION.size
    regions = []
    for addr, length in heads:
        if off + length > len(payload):
            raise ValueError("region at 0x%x runs past the request" % addr)
        regions.append((addr, bytearray(payload[off:off + length])))
        off += length
    return call, regions


def encode_reply(ret, regions):
    return b"".join([_RET.pack(ret), _COUNT.pack(len(regions), 0)] + [bytes(d) for _, d in regions])


def decode_reply(payload, lengths):
    ret, = _RET.unpack_from(payload)
    nr, _ = _COUNT.unpack_from(payload, _RET.size)
    if nr != len(lengths):
        raise ConnectionError("reply carries %d regions, expected %d" % (nr, len(lengths)))
    off = _RET.size + _COUNT.size
    out = []
    for n in lengths:
        out.append(payload[off:off + n])
        off += n
    return ret, out


class SocketPrivcmd:
    """Client end of a simulated host's privcmd socket."""

    def __init__(self, state_dir=None):
        self.state_dir = state_dir or default_state_dir()
        self.path = os.path.join(self.state_dir, SOCKET_NAME)

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise HypervisorUnavailable(
                "no hypervisor: no Xen control domain here (/proc/xen/capabilities) and no "
                "simulated host at %s (start one with `hyperv-sim boot`, or set HYPERV_SIM_DIR)"
                % self.path)
        except ConnectionRefusedError:
            sock.close()
            raise HypervisorUnavailable("no hypervisor answers on %s (stale socket: it has "
                                        "stopped)" % self.path)
        except PermissionError:
            sock.close()
            raise HypervisorUnavailable("permission denied on %s: only the user who booted "
                                        "the host may use it" % self.path)
        except OSError as e:
            sock.close()
            raise HypervisorUnavailable("cannot connect to %s: %s" % (self.path, e.strerror))
        return sock

    def _exchange(self, kind, payload):
        sock = self._connect()
        try:
            send_frame(sock, kind, payload)
            rkind, reply = recv_frame(sock)
        except (ConnectionError, OSError) as e:
            raise HypervisorUnavailable("hypervisor at %s hung up: %s" % (self.path, e))
        finally:
            sock.close()
        if rkind is None:
            raise HypervisorUnavailable("hypervisor at %s closed the connection: access "
                                        "refused or it stopped" % self.path)
        if rkind != kind:
            raise HypervisorUnavailable("hypervisor at %s answered a %r frame" % (self.path, rkind))
        return reply

    def hypercall(self, call_bytes, regions):
        """Issue one hypercall.  regions: [(addr, bytes)], sent and returned."""
        reply = self._exchange(KIND_HYPERCALL, encode_hypercall(call_bytes, regions))
        return decode_reply(reply, [len(d) for _, d in regions])

    def toolstack(self, op, **args):
        """A simulator-only toolstack request; raises ToolstackRefused (Busy: retry later) on failure."""
        reply = json.loads(self._exchange(KIND_TOOLSTACK, json.dumps(dict(args, op=op)).encode()))
        if not reply.get("ok"):
            cls = Busy if reply.get("busy") else ToolstackRefused
            raise cls(reply.get("error", "toolstack request %s failed" % op))
        return reply.get("result")
