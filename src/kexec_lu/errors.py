"""The tool's errors: each is one line on stderr and a non-zero exit status.

The public interface has its own (xen_public.errors: a malformed format, no
hypervisor, busy); USER_ERRORS is both roots, what kexec-lu prints as one line.
"""
import os

from xen_public.errors import XenPublicError


class KexecLuError(Exception):
    """A failure with a message fit to print as is."""

    exit_status = 1


class ImageError(KexecLuError):
    """The file is not a Xen image we can load."""


class HypercallError(KexecLuError):
    """A hypercall returned a negative errno."""

    def __init__(self, what, errno_value, detail=""):
        self.errno = errno_value
        reason = os.strerror(errno_value) if errno_value > 0 else "error %d" % errno_value
        msg = "%s failed: %s (-%d)" % (what, reason, errno_value)
        if detail:
            msg += ": " + detail
        super().__init__(msg)


USER_ERRORS = (KexecLuError, XenPublicError)
