"""Toolstack operations: what xl asks of Xen, as simulator-only requests.

Each op takes and returns JSON-able values; errors are KexecLuError with a
message fit for the user.
"""
import os

from kexec_lu.errors import KexecLuError


class Toolstack:
    def __init__(self, hv, on_shutdown):
        self.hv = hv
        self.on_shutdown = on_shutdown
        self.ops = {
            "ping": lambda r: {"pid": os.getpid()},
            "info": lambda r: hv.info(),
            "list": lambda r: hv.list_domains(),
            "create": self.create,
            "destroy": lambda r: hv.destroy_domain(r["domain"]),
            "pause": lambda r: hv.set_paused(r["domain"], True).describe(),
            "unpause": lambda r: hv.set_paused(r["domain"], False).describe(),
            "dmesg": lambda r: hv.console.lines(),
            "shutdown": self.shutdown,
        }

    def handle(self, request):
        op = request.get("op")
        handler = self.ops.get(op)
        if handler is None:
            raise KexecLuError("unknown toolstack operation %r" % op)
        return handler(request)

    def create(self, r):
        dom = self.hv.create_domain(str(r["name"]), str(r["type"]), int(r["memory"]), int(r["vcpus"]))
        return dom.describe()

    def shutdown(self, r):
        self.hv.console.log("shutdown requested")
        self.on_shutdown()
        return None
