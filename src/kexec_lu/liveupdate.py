"""`kexec-lu exec`: trigger the live update and follow it to the end.

KEXEC_CMD_kexec (type live update) returns once xen#1's pre-flight checks
pass; the update then runs on its own.  Its progress is read from the
hypervisor's live-update report (a simulator toolstack request), across the
exec: the report xen#2 serves carries the same update id.
"""
import time

from xen_public import abi
from xen_public.errors import HypervisorUnavailable

from .errors import HypercallError, KexecLuError

POLL_S = 0.005
DONE = ("complete", "aborted", "halted", "refused")


DIED = ("the hypervisor (pid %d) died during the live update; its RAM still holds the "
        "stream: `hyperv-sim recover --image IMAGE` restores every domain from it")


def _hypervisor_died(client):
    """Gone, and still gone a moment later: the kernel can show an exec
    from a thread other than the first as that thread's exit for an
    instant, and a host that is slow to start xen#2 is not dead."""
    gone = getattr(client.transport, "hypervisor_gone", None)
    if not (gone and gone()):
        return False
    time.sleep(0.2)
    return gone() and _report(client) is None


def _report(client):
    try:
        return client.transport.toolstack("lu-report")
    except HypervisorUnavailable:
        return None          # between xen#1 and xen#2: nobody answers yet


def run_live_update(client, timeout=120.0, progress=None):
    """The final report.  progress (kexec_lu.render.LiveUpdateProgress, or
    None for silence) is told the start, each phase as it ends, and the end."""
    # What the update will carry, asked before it starts: the report may
    # already be xen#2's when it is first read.
    loaded = {t: client.kexec_status(t) for t in (abi.KEXEC_TYPE_CRASH, abi.KEXEC_TYPE_DEFAULT)}
    try:
        client.kexec_exec(abi.KEXEC_TYPE_LIVEUPDATE)
    except HypercallError as e:
        rep = _report(client) or {}
        why = rep.get("error") if rep.get("state") == "refused" else None
        raise KexecLuError("live update refused: %s" % (why or e))
    if not getattr(client.transport, "has_reports", True):
        # Real Xen reports no progress to dom0: the hypercall is all we have.
        if progress:
            progress.triggered()
        return {"state": "triggered", "id": None, "phases": [], "error": None}
    first = _report(client)
    uid = first["id"] if first else None
    shown, announced = 0, False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rep = first or _report(client)
        first = None
        if rep is None and _hypervisor_died(client):
            raise KexecLuError(DIED % getattr(client.transport, "peer_pid", 0))
        if rep is not None and (uid is None or rep.get("id") == uid or rep.get("state") == "halted"):
            phases = [p for p in rep["phases"] if p["ms"] is not None]
            if progress and not announced and (rep.get("to_version") or rep["state"] in DONE):
                # The first report that names both versions: xen#1's once its
                # pre-flight has read the image, or xen#2's.
                progress.started(rep, crash_loaded=loaded[abi.KEXEC_TYPE_CRASH],
                                 reboot_loaded=loaded[abi.KEXEC_TYPE_DEFAULT])
                announced = True
            if progress and announced:
                for p in phases[shown:]:
                    progress.phase(p)
                shown = max(shown, len(phases))
            if rep["state"] in DONE:
                if progress:
                    progress.finished(rep)
                return rep
        time.sleep(POLL_S)
    raise KexecLuError("no report from the hypervisor within %d s (see hyperv-sim dmesg)" % timeout)
