"""What a live update did, phase by phase: kept by the hypervisor, read by
`kexec-lu exec` (toolstack "lu-report"), carried from xen#1 to xen#2 in the
stream's optional LU_TIMINGS record."""
import os

from xen_public import lustream as ls

from .._lu_core import lib

# Named fault-injection points, in the order an update reaches them.  The
# point of no return lies between "image-check" and the exec; "save:<RECORD>"
# fails the save as it is about to write the first record of that kind.
SAVE_RECORD_FAULTS = tuple("save:" + name for _, name in sorted(ls.RECORD_NAMES.items())
                           if name != "END")
FAULTS_BEFORE_PONR = ("preflight", "quiesce-hvm", "quiesce-pv", "save") + SAVE_RECORD_FAULTS + \
    ("stream-alloc", "mfn-array", "breadcrumb", "image-check")
# xen#2's: started but nothing read yet, then each step of the restore, and
# "unpause" once every pass is done but before the stream is let go.
FAULTS_AFTER_PONR = ("restore-start", "restore-validate", "restore-pass0", "restore-pass1",
                     "restore-pass2", "unpause")
FAULT_POINTS = FAULTS_BEFORE_PONR + FAULTS_AFTER_PONR
# For error messages: the save:<RECORD> points as one entry.
FAULT_POINTS_SUMMARY = ", ".join(p for p in FAULT_POINTS if not p.startswith("save:")).replace(
    "save,", "save, save:<RECORD> (e.g. save:LU_DOMAIN),")


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
