"""kexec-lu: load a new Xen and live-update the running one into it."""

__version__ = "0.1.0"
