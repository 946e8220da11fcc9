"""The privcmd channel to the hypervisor, as a UNIX socket.

Linux's /dev/xen/privcmd takes IOCTL_PRIVCMD_HYPERCALL with a struct
privcmd_hypercall {u64 op; u64 arg[5];}; arguments that are guest handles
are addresses in the caller's memory, which Xen reads and writes with
copy_from/to_guest.  The socket carries exactly that struct: the hypervisor
reads and writes the caller's memory itself, at those addresses, in the
process on the other end (its pid from SO_PEERCRED).  Nothing on the wire
depends on which hypercall it is.

Frame: u32 length, u8 kind, payload.
  kind 'H' hypercall: privcmd_hypercall (48 bytes); reply: i64 ret.
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


def encode_return(ret):
    return _RET.pack(ret)


def decode_return(payload):
    """A hypercall's return value, or None if payload is not one."""
    return _RET.unpack(payload)[0] if len(payload) == _RET.size else None


YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
PR_SET_PTRACER = 0x59616D61     # prctl option, linux/prctl.h ("Yama")


def allow_memory_access(pid, scope_file=YAMA_SCOPE):
    """Let process pid (the hypervisor) read and write this process's
    memory, as Xen does a guest's.  Needed only under Yama's restricted
    ptrace scope (1), where by default only an ancestor may; scope 0 needs
    nothing, 2 and 3 forbid it whatever we say (the hypervisor then
    answers -EFAULT and logs why)."""
    try:
        with open(scope_file) as f:
            if f.read().strip() != "1":
                return
    except OSError:
        return                  # no Yama: ordinary ptrace rules (same user) apply
    import ctypes               # only here: most callers never need it
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0)


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
        self._granted = None        # the hypervisor pid allowed into our memory

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
            if kind == KIND_HYPERCALL and self._granted != self.peer_pid:
                allow_memory_access(self.peer_pid)
                self._granted = self.peer_pid
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

    def hypercall(self, call_bytes):
        """Issue one hypercall (a struct privcmd_hypercall); -> its return
        value.  Its guest handles are addresses in this process, which the
        hypervisor reads and writes while it runs the call."""
        ret = decode_return(self._exchange(KIND_HYPERCALL, bytes(call_bytes)))
        if ret is None:
            raise HypervisorUnavailable("hypervisor at %s answered a hypercall with something "
                                        "that is not a return value" % self.path)
        return ret

    def toolstack(self, op, **args):
        """A simulator-only toolstack request; raises ToolstackRefused (Busy: retry later) on failure."""
        reply = json.loads(self._exchange(KIND_TOOLSTACK, json.dumps(dict(args, op=op)).encode()))
        if not reply.get("ok"):
            cls = Busy if reply.get("busy") else ToolstackRefused
            raise cls(reply.get("error", "toolstack request %s failed" % op))
        return reply.get("result")
