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
import contextlib
import json
import os
import socket
import stat
import struct
import threading

from .errors import Busy, HypervisorUnavailable, NotAnswering, ToolstackRefused

KIND_HYPERCALL = b"H"
KIND_TOOLSTACK = b"T"
MAX_FRAME = 512 << 20

_LEN = struct.Struct("<I")
_REGION = struct.Struct("<QQ")
_COUNT = struct.Struct("<II")
_RET = struct.Struct("<q")
SOCKET_NAME = "privcmd"
PID_NAME = "xen.pid"            # the hypervisor's pid, the same across live updates


def default_state_dir():
    """Where a simulated host lives unless HYPERV_SIM_DIR says otherwise."""
    env = os.environ.get("HYPERV_SIM_DIR")
    if env:
        return env
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "hyperv-sim")


def send_frame(sock, kind, payload):
    sock.sendall(_LEN.pack(len(payload) + 1) + kind + payload)


class OverBudget(ConnectionError):
    """A request larger than what the server may hold now."""


class ByteBudget:
    """Bytes of requests a server holds at once, over all its connections."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, n):
        with self._lock:
            if self.used + n > self.limit:
                raise OverBudget("a request of %d bytes while %d of %d are held"
                                 % (n, self.used, self.limit))
            self.used += n
        try:
            yield
        finally:
            with self._lock:
                self.used -= n


def recv_length(sock):
    """A frame's length, or None on a clean end of stream."""
    head = sock.recv(_LEN.size, socket.MSG_WAITALL)
    if not head:
        return None
    if len(head) < _LEN.size:
        raise ConnectionError("truncated frame header")
    (length,) = _LEN.unpack(head)
    if not 1 <= length <= MAX_FRAME:
        raise ConnectionError("frame length %d out of range" % length)
    return length


def recv_body(sock, length):
    """(kind, payload) of a frame of `length` bytes, read into one buffer."""
    body = bytearray(length)
    view = memoryview(body)
    got = 0
    while got < length:
        n = sock.recv_into(view[got:], min(length - got, 1 << 20))
        if not n:
            raise ConnectionError("connection closed after %d of %d bytes" % (got, length))
        got += n
    return bytes(view[:1]), view[1:]


def recv_frame(sock):
    """(kind, payload), or (None, None) on a clean end of stream."""
    length = recv_length(sock)
    if length is None:
        return None, None
    return recv_body(sock, length)


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
    call = bytes(payload[:call_size])
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


def _busy_refusal(kind, payload):
    """The server's "busy, retry" answer to any request, if that is what this is."""
    if kind != KIND_TOOLSTACK:
        return None
    try:
        answer = json.loads(bytes(payload))
    except ValueError:
        return None
    return answer.get("error") if isinstance(answer, dict) and answer.get("busy") else None


def _trusted(st, what, path):
    """A state directory or socket this user may trust: its own (or root's),
    writable by nobody else.  -> None, or why not."""
    uid = os.geteuid()
    if st.st_uid not in (uid, 0):
        return "%s %s belongs to uid %d, not to you: refusing to trust it" % (what, path, st.st_uid)
    if what == "state directory" and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "%s %s is writable by others: refusing to trust it" % (what, path)
    return None


def process_gone(pid):
    """True once pid has exited (a zombie counts as gone).  Not while it
    execs from a thread other than its first: the kernel then shows the
    first thread as a zombie until the exec'ing one takes its place, and
    the hypervisor execs into xen#2 exactly that way."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return False
        return len(os.listdir("/proc/%d/task" % pid)) <= 1
    except (OSError, IndexError):
        return True


class SocketPrivcmd:
    """Client end of a simulated host's privcmd socket.

    It trusts nothing it has not checked: the state directory and the
    socket must be this user's (or root's) and not writable by others, and
    the process answering must run as this user or root (SO_PEERCRED, from
    this side).  peer_pid is the hypervisor last spoken to."""

    def __init__(self, state_dir=None):
        self.state_dir = state_dir or default_state_dir()
        self.path = os.path.join(self.state_dir, SOCKET_NAME)
        self.peer_pid = None

    def _check_path(self):
        for what, path in (("state directory", self.state_dir), ("socket", self.path)):
            try:
                st = os.stat(path) if what == "state directory" else os.lstat(path)
            except FileNotFoundError:
                return          # connect() says what is missing
            except OSError as e:
                raise HypervisorUnavailable("cannot reach %s: %s" % (path, e.strerror))
            why = _trusted(st, what, path)
            if why:
                raise HypervisorUnavailable(why)
            if what == "socket" and not stat.S_ISSOCK(st.st_mode):
                raise HypervisorUnavailable("%s is not a socket: refusing to use it" % path)

    def _check_peer(self, sock):
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
        if uid not in (os.geteuid(), 0):
            raise HypervisorUnavailable("the process answering on %s runs as uid %d, not as you "
                                        "or root: refusing to trust it" % (self.path, uid))
        self.peer_pid = pid

    def running_pid(self):
        """The pid in the state directory's pid file, if that process runs."""
        try:
            fd = os.open(os.path.join(self.state_dir, PID_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            pid = int(os.read(fd, 32).strip() or 0)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return pid if pid > 0 and not process_gone(pid) else None

    def hypervisor_gone(self):
        """True if the hypervisor last spoken to has exited."""
        return self.peer_pid is not None and process_gone(self.peer_pid)

    def _connect(self):
        self._check_path()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            pid = self.running_pid()
            if pid:
                raise NotAnswering("the hypervisor (pid %d) in %s does not answer yet (booting, "
                                   "or between two hypervisors in a live update): retry"
                                   % (pid, self.state_dir))
            if isinstance(e, ConnectionRefusedError):
                raise HypervisorUnavailable("no hypervisor answers on %s (stale socket: it has "
                                            "stopped)" % self.path)
            raise HypervisorUnavailable(
                "no hypervisor: no Xen control domain here (/proc/xen/capabilities) and no "
                "simulated host at %s (start one with `hyperv-sim boot`, or set HYPERV_SIM_DIR)"
                % self.path)
        except PermissionError:
            sock.close()
            raise HypervisorUnavailable("permission denied on %s: only the user who booted "
                                        "the host may use it" % self.path)
        except OSError as e:
            sock.close()
            raise HypervisorUnavailable("cannot connect to %s: %s" % (self.path, e.strerror))
        try:
            self._check_peer(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _exchange(self, kind, payload):
        sock = self._connect()
        try:
            try:
                send_frame(sock, kind, payload)
            except (ConnectionError, OSError):
                pass        # a server that turned us away has said why: read it
            rkind, reply = recv_frame(sock)
        except (ConnectionError, OSError) as e:
            raise HypervisorUnavailable("hypervisor at %s hung up: %s" % (self.path, e))
        finally:
            sock.close()
        if rkind is None:
            raise HypervisorUnavailable("hypervisor at %s closed the connection: access "
                                        "refused or it stopped" % self.path)
        if rkind != kind:
            refusal = _busy_refusal(rkind, reply)
            if refusal:
                raise Busy(refusal)
            raise HypervisorUnavailable("hypervisor at %s answered a %r frame" % (self.path, rkind))
        return bytes(reply)

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
