"""The privcmd socket: the hypervisor's end.

Mode 0600 in a 0700 directory, and each peer's credentials checked
(SO_PEERCRED): only the user who booted the host, dom0's root, gets in.
One request per connection; each connection is served by its own thread,
the hypervisor's lock serialising what they change.

Nothing a client does can stop the host: at most MAX_CONNECTIONS are served
at once and MAX_INFLIGHT bytes of requests held; a connection beyond either,
or one that cannot be accepted or given a thread (no file descriptors, no
memory), is refused with a busy answer or closed, counted, and the server
carries on.  Only the toolstack's `shutdown` ends serve_forever for good.
"""
import errno
import json
import os
import socket
import struct
import threading
import time

from xen_public import abi, privcmd as wire
from xen_public.errors import Busy

from .errors import USER_ERRORS

from .hypercalls import CALL_SIZE, CallerMemory

MAX_CONNECTIONS = 64            # served at once; more are refused as busy
MAX_INFLIGHT = 1 << 30          # request bytes held at once, over every connection
MAX_TOOLSTACK_REQUEST = 1 << 20  # xl's requests are small JSON objects
FIRST_FRAME_TIMEOUT = 10.0      # a client that connects sends at once
ACCEPT_BACKOFF = 0.05           # after accept() fails (EMFILE, ENOMEM): let fds free


class PrivcmdServer:
    def __init__(self, path, dispatcher, toolstack, console):
        self.path = path
        self.dispatcher = dispatcher
        self.toolstack = toolstack
        self.console = console
        self.owner = os.geteuid()
        self.stopping = threading.Event()
        self.refused = 0
        self._count_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._budget = wire.ByteBudget(MAX_INFLIGHT)
        self.sock = self._bind()

    def _bind(self):
        """A listening socket at self.path (whatever was there goes: the
        directory is this user's)."""
        if os.path.lexists(self.path):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(64)
        sock.settimeout(0.2)
        self._bound = os.lstat(self.path).st_ino
        return sock

    def _rebind_if_gone(self):
        """A socket file deleted (or replaced) under the server is made
        again: the host must stay manageable."""
        if self.stopping.is_set():
            return                  # close() took it away
        try:
            if os.lstat(self.path).st_ino == self._bound:
                return
        except FileNotFoundError:
            pass
        try:
            fresh = self._bind()
        except OSError as e:
            self._refuse(None, "cannot recreate the socket %s: %s" % (self.path, e.strerror))
            return
        self.sock.close()
        self.sock = fresh
        self.console.log("privcmd: %s had gone; listening on it again", self.path)

    def serve_forever(self):
        """Until stopping is set.  No error of a connection ends it."""
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                self._rebind_if_gone()
                continue
            except OSError as e:
                if self.stopping.is_set():
                    break
                self._refuse(None, "cannot accept a connection: %s" % (e.strerror or e))
                time.sleep(ACCEPT_BACKOFF)
                continue
            self._start(conn)

    def _start(self, conn):
        if not self._slots.acquire(blocking=False):
            self._refuse(conn, "%d connections are being served" % MAX_CONNECTIONS)
            return
        try:
            threading.Thread(target=self._serve_slot, args=(conn,), daemon=True).start()
        except RuntimeError as e:           # can't start new thread
            self._slots.release()
            self._refuse(conn, str(e))

    def _refuse(self, conn, why):
        """Count a connection turned away; tell it to retry if it can be told."""
        with self._count_lock:
            self.refused += 1
            n = self.refused
        if n & (n - 1) == 0:                # 1, 2, 4, 8...: a flood logs a few lines
            self.console.log("privcmd: refused connection %d: %s (the host carries on)", n, why)
        if conn is None:
            return
        try:
            conn.settimeout(0.5)
            wire.send_frame(conn, wire.KIND_TOOLSTACK,
                            json.dumps({"ok": False, "busy": True,
                                        "error": "hypervisor busy: %s; retry" % why}).encode())
        except OSError:
            pass
        finally:
            conn.close()

    def _serve_slot(self, conn):
        try:
            self._serve(conn)
        finally:
            self._slots.release()

    def drain(self, timeout=1.0):
        """Let the connections being served finish (the one that asked for
        the shutdown gets its answer before the process ends), for at most
        timeout seconds: an idle client does not hold a power-off up."""
        deadline = time.monotonic() + timeout
        held = 0
        while held < MAX_CONNECTIONS and self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            held += 1
        for _ in range(held):
            self._slots.release()

    def close(self):
        self.stopping.set()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _peer(self, conn):
        """The caller's pid, or None if it is not the owner's."""
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid != self.owner:
            self.console.log("privcmd: refused pid %d uid %d (owner is uid %d)", pid, uid, self.owner)
            return None
        return pid

    def _serve(self, conn):
        conn.settimeout(FIRST_FRAME_TIMEOUT)
        with conn:
            try:
                pid = self._peer(conn)
                if pid is None:
                    return
                length = wire.recv_length(conn)
                if length is None:
                    return
                conn.settimeout(30)
                with self._budget.hold(length):
                    self._answer(conn, pid, *wire.recv_body(conn, length))
            except wire.OverBudget as e:
                self._refuse(conn, str(e))
            except (ConnectionError, ValueError, OSError) as e:
                self.console.log("privcmd: dropped a malformed request: %s", e)
            except Exception as e:          # a bug here must not cost the host
                self.console.log("privcmd: internal error serving a request: %s: %s",
                                 type(e).__name__, e)

    def _answer(self, conn, pid, kind, payload):
        if kind == wire.KIND_HYPERCALL:
            if len(payload) != CALL_SIZE:
                raise ValueError("hypercall request of %d bytes, not a privcmd_hypercall (%d)"
                                 % (len(payload), CALL_SIZE))
            wire.send_frame(conn, kind, wire.encode_return(self._hypercall(pid, bytes(payload))))
        elif kind == wire.KIND_TOOLSTACK:
            if len(payload) > MAX_TOOLSTACK_REQUEST:
                reply = {"ok": False, "error": "toolstack request of %d bytes: at most %d"
                         % (len(payload), MAX_TOOLSTACK_REQUEST)}
            else:
                reply = self._toolstack(payload)
            wire.send_frame(conn, kind, json.dumps(reply).encode())
        else:
            self.console.log("privcmd: dropped a request of unknown kind %r", kind)

    def _hypercall(self, pid, call):
        """One hypercall from process pid, its guest handles read and
        written in that process's memory."""
        if self.dispatcher is None:
            return -abi.ENODEV                  # halted
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:                    # no caller to pin: no memory to read
            self.console.log("privcmd: caller pid %d %s", pid,
                             "exited before its hypercall was read" if e.errno == errno.ESRCH
                             else "cannot be pinned: %s" % e.strerror)
            return -abi.EFAULT
        try:
            return self.dispatcher.call(call, CallerMemory(pid, pidfd))
        finally:
            os.close(pidfd)

    def _toolstack(self, payload):
        try:
            request = json.loads(bytes(payload))
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
            return {"ok": True, "result": self.toolstack.handle(request)}
        except USER_ERRORS as e:
            return {"ok": False, "error": str(e), "busy": isinstance(e, Busy)}
        except (ValueError, TypeError, KeyError, RecursionError) as e:
            return {"ok": False, "error": "bad toolstack request: %s" % e}
        except Exception as e:              # a bug: one line back, the host carries on
            self.console.log("privcmd: internal error in toolstack request: %s: %s",
                             type(e).__name__, e)
            return {"ok": False, "error": "internal error: %s: %s" % (type(e).__name__, e)}
