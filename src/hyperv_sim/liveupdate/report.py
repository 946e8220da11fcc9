"""What a live update did, phase by phase: kept by the hypervisor, read by
`kexec-lu exec` (toolstack "lu-report"), carried from xen#1 to xen#2 in the
stream's optional LU_TIMINGS record."""
import os

from .._lu_core import lib


class InjectedFault(Exception):
    def __init__(self, point):
        super().__init__("injected fault at %s" % point)
        self.point = point


class Report:
    def __init__(self, update_id=None):
        self.id = update_id if update_id is not None else int.from_bytes(os.urandom(8), "little")
        self.state = "running"
        self.phases = []          # [name, start_ns, end_ns]
        self.error = None
        self.info = {}

    def begin(self, name):
        self.phases.append([name, lib.lu_now_ns(), None])

    def end(self):
        if self.phases and self.phases[-1][2] is None:
            self.phases[-1][2] = lib.lu_now_ns()

    def phase(self, name):
        self.end()
        self.begin(name)

    def finish(self, state, error=None):
        self.end()
        self.state = state
        self.error = error

    def timings(self):
        return [(n, a, b or a) for n, a, b in self.phases]

    def to_json(self):
        out = {"id": self.id, "state": self.state, "error": self.error,
               "phases": [{"name": n, "start_ns": a, "end_ns": b,
                           "ms": None if b is None else (b - a) / 1e6} for n, a, b in self.phases]}
        out.update(self.info)
        return out
