"""The hypervisor's boot command line: the options the simulator honours.

Spelled as Xen spells them.  Sizes without a unit are in KiB, as in Xen's
parse_size_and_unit().  Unknown options are kept and reported, not fatal,
like Xen's "parameter ... unknown" warning.
"""
import shlex
from dataclasses import dataclass, field

from kexec_lu.errors import KexecLuError
from kexec_lu.units import MiB, parse_address, parse_size

DEFAULT_DOM0_MEM = 512 * MiB
DEFAULT_DOM0_VCPUS = 2
KNOWN = ("liveupdate", "dom0_mem", "dom0_max_vcpus", "crashkernel", "nr_cpus", "console",
         "lu_quiesce_timeout", "lu_fault",
         "loglvl", "guest_loglvl", "com1", "com2", "noreboot", "sync_console")
MAX_CMDLINE = 1023      # xen_commandline_t holds 1024 bytes with the NUL
VALUED = ("liveupdate", "dom0_mem", "dom0_max_vcpus", "crashkernel", "nr_cpus",
          "lu_quiesce_timeout", "lu_fault")


class BootLineError(KexecLuError):
    pass


@dataclass
class BootOptions:
    text: str = ""
    liveupdate_size: int = 0        # bytes of LU bootmem; 0: none reserved
    liveupdate_base: int = None     # set when handed over by a live update
    dom0_mem: int = DEFAULT_DOM0_MEM
    dom0_max_vcpus: int = DEFAULT_DOM0_VCPUS
    crash_size: int = 0
    crash_base: int = None
    nr_cpus: int = None
    lu_quiesce_timeout_ms: int = 2000
    lu_fault: str = None            # debug: fail a live update at this named point
    unknown: list = field(default_factory=list)


def _size_at_base(name, value):
    size_text, _, base_text = value.partition("@")
    size = parse_size(size_text, default_unit="K", what="%s= size" % name)
    base = parse_address(base_text, what="%s= base" % name) if base_text else None
    return size, base


def _int(name, value, low=1, high=4096):
    try:
        n = int(value, 0)
    except ValueError:
        raise BootLineError("%s=%s: expected a number" % (name, value))
    if not low <= n <= high:
        raise BootLineError("%s=%s: must be between %d and %d" % (name, value, low, high))
    return n


def parse(text):
    """Parse a command line; BootLineError names the offending option."""
    if len(text.encode()) > MAX_CMDLINE:
        raise BootLineError("command line is %d bytes; Xen takes at most %d"
                            % (len(text.encode()), MAX_CMDLINE))
    opts = BootOptions(text=text)
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise BootLineError("command line %r: %s" % (text, e))
    for word in words:
        name, has_value, value = word.partition("=")
        if name in VALUED and not (has_value and value):
            raise BootLineError("%s needs a value (%s=...)" % (name, name))
        try:
            if name == "liveupdate":
                opts.liveupdate_size, opts.liveupdate_base = _size_at_base(name, value)
                if opts.liveupdate_size % MiB or not opts.liveupdate_size:
                    raise BootLineError("liveupdate=%s: the size must be a non-zero whole "
                                        "number of MiB (e.g. liveupdate=64M)" % value)
            elif name == "dom0_mem":
                # Xen also accepts min:/max: forms; the simulator takes one size.
                opts.dom0_mem = parse_size(value, default_unit="K", what="dom0_mem=")
            elif name == "dom0_max_vcpus":
                opts.dom0_max_vcpus = _int(name, value.split("-")[-1], 1, 128)
            elif name == "crashkernel":
                opts.crash_size, opts.crash_base = _size_at_base(name, value)
            elif name == "nr_cpus":
                opts.nr_cpus = _int(name, value, 1, 4096)
            elif name == "lu_quiesce_timeout":
                opts.lu_quiesce_timeout_ms = _int(name, value, 1, 600000)
            elif name == "lu_fault":
                from .liveupdate.report import FAULT_POINTS, FAULT_POINTS_SUMMARY
                if value not in FAULT_POINTS:
                    raise BootLineError("lu_fault=%s: not a fault point (%s)" % (value, FAULT_POINTS_SUMMARY))
                opts.lu_fault = value
            elif name not in KNOWN:
                opts.unknown.append(word)
        except BootLineError:
            raise
        except KexecLuError as e:
            raise BootLineError("%s: %s" % (word, e))
    return opts
