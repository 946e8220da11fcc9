"""The simulated host's errors a user sees as one line and a non-zero exit
status (hyperv-sim's commands, the toolstack's replies).  USER_ERRORS adds
the public interface's (xen_public.errors): what hyperv-sim prints as one
line."""
from xen_public.errors import XenPublicError


class HypervSimError(Exception):
    """A failure with a message fit to print as is."""

    exit_status = 1


class BootFailure(HypervSimError):
    """The hypervisor cannot start; the message is its last console line."""


class DomainError(HypervSimError):
    """A domain operation the hypervisor refuses (create, destroy, pause, ...)."""


class RestoreHalted(BootFailure):
    """xen#2 could not restore the live-update stream: it halts, RAM and
    breadcrumb intact, for another image to restore from."""

    def __init__(self, message, stream=None, facts=None):
        super().__init__(message)
        self.stream = stream      # the bytes it found, for `hyperv-sim stream dump`
        self.facts = facts        # where it was booted, for `hyperv-sim recover`


USER_ERRORS = (HypervSimError, XenPublicError)
