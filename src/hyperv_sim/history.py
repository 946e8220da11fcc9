"""The host's live-update history: one JSON line per update that ended
(complete, aborted, refused, halted) or was recovered, in the state
directory's history.jsonl, appended by whoever saw the end: xen#1 for a
refusal or an abort, xen#2 for a completion or a halt, the boot loader for
a recovery.  `hyperv-sim history` reads it.  An operator's log, like the
console: a new boot starts it afresh, and no hypervisor reads it back.
"""
import os
import time

from . import statedir
from .errors import HypervSimError

HISTORY_FILE = "history.jsonl"


def entry(report, outcome=None, **extra):
    """What the history keeps of a live-update report (kexec-lu exec's)."""
    phases = [{"name": p["name"], "ms": p["ms"]} for p in report.get("phases", [])]
    out = {"id": report.get("id"), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "outcome": outcome or report["state"], "from_version": report.get("from_version"),
           "to_version": report.get("to_version"), "blackout_ms": report.get("blackout_ms"),
           "error": report.get("error"), "phases": phases}
    out.update(extra)
    return out


class History:
    def __init__(self, path):
        self.path = path

    @classmethod
    def of(cls, state_dir):
        return cls(os.path.join(state_dir, HISTORY_FILE))

    def record(self, report, outcome=None, **extra):
        """Append one line; a full disk loses the line, never the update."""
        import json         # here: xen#2 imports this module inside the blackout
        line = json.dumps(entry(report, outcome, **extra), sort_keys=True) + "\n"
        try:
            with statedir.open_text(self.path, "a") as f:
                f.write(line)
        except (OSError, statedir.StateDirError):
            pass


class NoHistory:
    """A hypervisor with no state directory (one inside a test process)."""

    def record(self, report, outcome=None, **extra):
        pass


def start_afresh(state_dir):
    statedir.open_text(os.path.join(state_dir, HISTORY_FILE), "w").close()


def read(state_dir):
    """Every entry, oldest first ([] before the first update)."""
    import json
    path = os.path.join(state_dir, HISTORY_FILE)
    if not os.path.lexists(path):
        return []
    entries = []
    with statedir.open_text(path, "r") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                # A line cut short (a full disk) or written by someone else.
                raise HypervSimError("%s: line %d is not a history entry (JSON): %r"
                                     % (path, number, line[:60])) from None
    return entries
