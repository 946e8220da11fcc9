"""Errors a user sees as one line on stderr and a non-zero exit status."""
import os


class KexecLuError(Exception):
    """A failure with a message fit to print as is."""

    exit_status = 1


class ImageError(KexecLuError):
    """The file is not a Xen image we can load."""


class HypervisorUnavailable(KexecLuError):
    """No hypervisor answers (no simulated host, no /dev/xen/privcmd)."""


class HypercallError(KexecLuError):
    """A hypercall returned a negative errno."""

    def __init__(self, what, errno_value, detail=""):
        self.errno = errno_value
        reason = os.strerror(errno_value) if errno_value > 0 else "error %d" % errno_value
        msg = "%s failed: %s (-%d)" % (what, reason, errno_value)
        if detail:
            msg += ": " + detail
        super().__init__(msg)


class Busy(KexecLuError):
    """Another operation holds the hypervisor; retrying later may succeed."""

    exit_status = 2
