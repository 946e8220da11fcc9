"""The errors of the public interface: bytes or values that are not what a
format says, and the simulated privcmd device that does not answer or is
busy.  Their messages are fit to print as one line; exit_status is what a
command line exits with."""


class XenPublicError(Exception):
    exit_status = 1


class FormatError(XenPublicError, ValueError):
    """An image, boot-information block, stream record or size that breaks
    its format (a ValueError too: a value that is not what it must be)."""


class HypervisorUnavailable(XenPublicError):
    """No hypervisor answers (no simulated host, no /dev/xen/privcmd)."""


class NotAnswering(HypervisorUnavailable):
    """A hypervisor runs but its socket does not answer yet (booting, or
    between xen#1 and xen#2): retrying shortly may succeed."""

    exit_status = 2


class Busy(XenPublicError):
    """Another operation holds the hypervisor; retrying later may succeed."""

    exit_status = 2


class ToolstackRefused(XenPublicError):
    """The simulated host refused a toolstack request; the message says why."""
