"""The scheduler: one thread per physical CPU, each running the C core's
pCPU loop (lu_sched_run) without the GIL, taking vCPUs in turn.

What runs is changed only while every pCPU is stopped (`stopped()`), so the
C side never sees an array being rebuilt.  Pausing a domain needs no stop: a
vCPU's pause request is honoured between steps.
"""
import contextlib
import threading
import time

from ._lu_core import ffi, lib

SLICE_STEPS = 4096
POLL_S = 0.00002
# The longest a pCPU sleeps when nothing can run (it doubles its sleep up to
# this from 20 us): an idle or rate-limited host then costs next to no CPU.
# While a live update quiesces, pCPUs sleep no longer than they first did,
# so that a device model answers the requests in flight at once.
IDLE_MAX_NS = 1000000
QUIESCE_IDLE_MAX_NS = 20000


class Scheduler:
    def __init__(self, nr_pcpus):
        self.nr_pcpus = nr_pcpus
        self.s = ffi.new("struct lu_sched *")
        self.s.slice = SLICE_STEPS
        self.s.idle_max_ns = IDLE_MAX_NS
        self._keep = []          # the C arrays s points into
        self._threads = []
        self._lock = threading.RLock()
        self._depth = 0

    def _start(self):
        self.s.stop = 0
        self._threads = [threading.Thread(target=lib.lu_sched_run, args=(self.s, cpu),
                                          name="pcpu%d" % cpu, daemon=True)
                         for cpu in range(self.nr_pcpus)]
        for t in self._threads:
            t.start()

    def _stop(self):
        self.s.stop = 1
        for t in self._threads:
            t.join()
        self._threads = []

    def set_slice(self, steps):
        """Steps per turn on a pCPU; the pCPUs read it at every turn, so it
        may change while they run."""
        self.s.slice = steps

    def set_idle_max(self, ns):
        """The longest an idle pCPU sleeps; read at every sleep."""
        self.s.idle_max_ns = ns

    @property
    def running(self):
        return bool(self._threads)

    def start(self):
        with self._lock:
            if not self.running and not self._depth:
                self._start()

    def shutdown(self):
        with self._lock:
            if self.running:
                self._stop()

    @contextlib.contextmanager
    def stopped(self):
        """Every vCPU off its pCPU, at a step boundary, until the block ends."""
        with self._lock:
            was_running = self.running
            if was_running:
                self._stop()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if was_running and not self._depth:
                    self._start()

    def set_work(self, vcpus, dm_clients, backends):
        """vcpus: cdata struct lu_vcpu *; dm_clients, backends: filled
        struct lu_dm_client / lu_backend values.  Call inside stopped()."""
        assert not self.running
        varr = ffi.new("struct lu_vcpu *[]", max(len(vcpus), 1))
        for i, v in enumerate(vcpus):
            varr[i] = v
        dm = ffi.new("struct lu_dm_client[]", max(len(dm_clients), 1))
        for i, c in enumerate(dm_clients):
            dm[i] = c
        be = ffi.new("struct lu_backend[]", max(len(backends), 1))
        for i, b in enumerate(backends):
            be[i] = b
        self._keep = [varr, dm, be, list(vcpus)]
        self.s.vcpus, self.s.nr_vcpus = varr, len(vcpus)
        self.s.dm, self.s.nr_dm = dm, len(dm_clients)
        self.s.be, self.s.nr_be = be, len(backends)
        self.s.cursor = 0


def pause_vcpus(vcpus, timeout=5.0):
    """Ask each vCPU to stop and wait until none is on a pCPU."""
    for v in vcpus:
        v.pause_req = 1
    # One seen off its pCPU after its request cannot start again (a pCPU
    # checks the request after claiming it): only the others are waited for.
    busy = [v for v in vcpus if v.on_cpu]
    deadline = time.monotonic() + timeout
    while busy:
        if time.monotonic() > deadline:
            raise TimeoutError("vCPUs still running after %.1f s" % timeout)
        # A slice is tens of microseconds: poll at about that rate.
        time.sleep(POLL_S)
        busy = [v for v in busy if v.on_cpu]


def unpause_vcpus(vcpus):
    for v in vcpus:
        v.pause_req = 0
