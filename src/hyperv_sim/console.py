"""The hypervisor's console: timestamped lines to a log file and a ring.

The file is the serial console: it keeps every line of every hypervisor
that ran on this host, across live updates.  `hyperv-sim dmesg` reads its
tail, like `xl dmesg` reads Xen's ring, so that what xen#1 printed is
still there after the update; `dmesg -c` clears it, as xl's does, by
writing a mark the next read starts after.  Timestamps are the machine's
monotonic clock, so they keep increasing across updates; each hypervisor
starts with a line naming its incarnation.  Without a file (a hypervisor
inside a test process) the ring alone serves.
"""
import collections
import os
import threading
import time

from . import statedir

RING_LINES = 4096
TAIL_BYTES = 1 << 20            # what dmesg reads of the file at most
CLEARED = "---- console cleared (dmesg -c) ----"
POWERED_ON = "---- power on ----"       # a host booted afresh: what came before is another host's


class Console:
    def __init__(self, path=None, echo=None):
        self._ring = collections.deque(maxlen=RING_LINES)
        self._lock = threading.Lock()
        self._path = path
        self._file = statedir.open_text(path, "a") if path else None
        self._echo = echo

    def log(self, fmt, *args):
        msg = fmt % args if args else fmt
        line = "(XEN) [%10.6f] %s" % (time.monotonic(), msg)
        with self._lock:
            self._ring.append(line)
            if self._file:
                try:
                    self._file.write(line + "\n")        # line-buffered
                except (OSError, ValueError):
                    # A full disk or a closed log loses the line from the
                    # file, never the caller (the ring still has it).
                    pass
            if self._echo:
                self._echo(line)

    def lines(self, clear=False):
        """The console since it was last cleared, at most RING_LINES lines,
        earlier hypervisors' included; clear: then clear it (dmesg -c)."""
        with self._lock:
            lines = self._file_tail() if self._file else None
            if lines is None:
                lines = list(self._ring)
            if clear:
                self._ring.clear()
        lines = _since_last_mark(lines)[-RING_LINES:]
        if clear:
            self.log(CLEARED)
        return lines

    def _file_tail(self):
        try:
            # Never through a symlink, as everything in the state directory.
            with os.fdopen(statedir.open_file(self._path, os.O_RDONLY), "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - TAIL_BYTES))
                text = f.read().decode("utf-8", "replace")
        except (OSError, statedir.StateDirError):
            return None
        lines = text.splitlines()
        return lines[1:] if size > TAIL_BYTES else lines     # the first is cut

    def close(self):
        if self._file:
            self._file.close()
            self._file = None


def _since_last_mark(lines):
    """The lines after the last clear, or from the last power-on."""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].endswith(CLEARED):
            return lines[i + 1:]
        if lines[i].endswith(POWERED_ON):
            return lines[i:]
    return lines
