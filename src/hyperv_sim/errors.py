"""The simulated host's errors a user sees as one line and a non-zero exit
status (hyperv-sim's commands, the toolstack's replies).  USER_ERRORS adds
the public interface's (xen_public.errors): what hyperv-sim prints as one
line."""
from xen_public.errors import XenPublicError


class HypervSimError(Exception):
    """A failure with a message fit to print as is."""

    exit_status = 1


USER_ERRORS = (HypervSimError, XenPublicError)
