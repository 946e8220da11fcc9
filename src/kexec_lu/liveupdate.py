"""`kexec-lu exec`: trigger the live update and follow it to the end.

KEXEC_CMD_kexec (type live update) returns once xen#1's pre-flight checks
pass; the update then runs on its own.  Its progress is read from the
hypervisor's live-update report (a simulator toolstack request), across the
exec: the report xen#2 serves carries the same update id.
"""
import time

from rich.console import Console
from rich.markup import escape

from . import abi
from .errors import HypercallError, HypervisorUnavailable, KexecLuError

POLL_S = 0.005
DONE = ("complete", "aborted", "halted", "refused")


def _report(client):
    try:
        return client.transport.toolstack("lu-report")
    except HypervisorUnavailable:
        return None          # between xen#1 and xen#2: nobody answers yet


def run_live_update(client, timeout=120.0, show=True):
    try:
        client.kexec_exec(abi.KEXEC_TYPE_LIVEUPDATE)
    except HypercallError as e:
        rep = _report(client) or {}
        why = rep.get("error") if rep.get("state") == "refused" else None
        raise KexecLuError("live update refused: %s" % (why or e))
    if not getattr(client.transport, "has_reports", True):
        # Real Xen reports no progress to dom0: the hypercall is all we have.
        if show:
            print("live update triggered (Xen reports its progress on its console)")
        return {"state": "triggered", "id": None, "phases": [], "error": None}
    first = _report(client)
    uid = first["id"] if first else None
    shown = 0
    deadline = time.monotonic() + timeout
    # Styled on a terminal, plain text when piped.
    out = Console(highlight=False, soft_wrap=True)
    if show:
        out.print("[bold]live update %s -> %s[/bold]" % (first.get("from_version"), first.get("to_version"))
                  if first else "live update started")
    while time.monotonic() < deadline:
        rep = _report(client)
        if rep is not None and (uid is None or rep.get("id") == uid or rep.get("state") == "halted"):
            phases = [p for p in rep["phases"] if p["ms"] is not None]
            if show:
                for p in phases[shown:]:
                    out.print("  %-16s %9.2f ms" % (p["name"], p["ms"]))
            shown = max(shown, len(phases))
            if rep["state"] in DONE:
                if show:
                    _summary(out, rep)
                return rep
        time.sleep(POLL_S)
    raise KexecLuError("no report from the hypervisor within %d s (see hyperv-sim dmesg)" % timeout)


def _summary(out, rep):
    if rep["state"] == "complete":
        out.print("[green]complete[/green]: Xen %s -> %s, blackout %.2f ms, %d domains, %d-byte stream"
                  % (rep.get("from_version"), rep.get("to_version"), rep.get("blackout_ms", 0.0),
                     rep.get("restored_domains", 0), rep.get("stream_bytes", 0)))
    else:
        out.print("[red]%s[/red]: %s" % (rep["state"], escape(str(rep.get("error")))))
