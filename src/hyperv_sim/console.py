"""The hypervisor's console: timestamped lines to a log file and a ring.

`hyperv-sim dmesg` reads the ring, like `xl dmesg`; the file keeps what a
serial console would have shown, across live updates.
"""
import collections
import threading
import time

from . import statedir

RING_LINES = 4096


class Console:
    def __init__(self, path=None, echo=None):
        self._ring = collections.deque(maxlen=RING_LINES)
        self._lock = threading.Lock()
        self._file = statedir.open_text(path, "a") if path else None
        self._echo = echo
        self._t0 = time.monotonic()

    def log(self, fmt, *args):
        msg = fmt % args if args else fmt
        line = "(XEN) [%10.6f] %s" % (time.monotonic() - self._t0, msg)
        with self._lock:
            self._ring.append(line)
            if self._file:
                try:
                    self._file.write(line + "\n")
                except (OSError, ValueError):
                    # A full disk or a closed log loses the line from the
                    # file, never the caller (the ring still has it).
                    pass
            if self._echo:
                self._echo(line)

    def lines(self):
        with self._lock:
            return list(self._ring)

    def close(self):
        if self._file:
            self._file.close()
            self._file = None
