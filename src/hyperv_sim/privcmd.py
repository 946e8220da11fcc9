"""The privcmd socket: the hypervisor's end.

Mode 0600 in a 0700 directory, and each peer's credentials checked
(SO_PEERCRED): only the user who booted the host, dom0's root, gets in.
One request per connection; each connection is served by its own thread,
the hypervisor's lock serialising what they change.
"""
import json
import os
import socket
import struct
import threading

from xen_public import abi, privcmd as wire
from xen_public.errors import Busy

from .errors import USER_ERRORS

from .hypercalls import CALL_SIZE


class PrivcmdServer:
    def __init__(self, path, dispatcher, toolstack, console):
        self.path = path
        self.dispatcher = dispatcher
        self.toolstack = toolstack
        self.console = console
        self.owner = os.geteuid()
        self.stopping = threading.Event()
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(64)
        self.sock.settimeout(0.2)

    def serve_forever(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self):
        self.stopping.set()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _peer_allowed(self, conn):
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid != self.owner:
            self.console.log("privcmd: refused pid %d uid %d (owner is uid %d)", pid, uid, self.owner)
            return False
        return True

    def _serve(self, conn):
        conn.settimeout(30)
        with conn:
            try:
                if not self._peer_allowed(conn):
                    return
                kind, payload = wire.recv_frame(conn)
                if kind == wire.KIND_HYPERCALL:
                    call, regions = wire.decode_hypercall(payload, CALL_SIZE)
                    ret = self.dispatcher.call(call, regions) if self.dispatcher else -abi.ENODEV  # halted
                    wire.send_frame(conn, kind, wire.encode_reply(ret, regions))
                elif kind == wire.KIND_TOOLSTACK:
                    reply = self._toolstack(payload)
                    wire.send_frame(conn, kind, json.dumps(reply).encode())
                elif kind is not None:
                    self.console.log("privcmd: dropped a request of unknown kind %r", kind)
            except (ConnectionError, ValueError, OSError) as e:
                self.console.log("privcmd: dropped a malformed request: %s", e)

    def _toolstack(self, payload):
        try:
            request = json.loads(payload)
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
            return {"ok": True, "result": self.toolstack.handle(request)}
        except USER_ERRORS as e:
            return {"ok": False, "error": str(e), "busy": isinstance(e, Busy)}
        except (ValueError, TypeError, KeyError) as e:
            return {"ok": False, "error": "bad toolstack request: %s" % e}
