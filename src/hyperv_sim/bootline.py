"""The hypervisor's boot command line: the options the simulator honours.

Spelled as Xen spells them.  Sizes without a unit are in KiB, as in Xen's
parse_size_and_unit().  Unknown options are kept and reported, not fatal,
like Xen's "parameter ... unknown" warning.
"""
from xen_public.errors import FormatError
from xen_public.units import MiB, parse_address, parse_size

from .errors import HypervSimError
from .guest import DEFAULT_WORKLOAD_RATE, RATE_FORMS, parse_workload_rate

DEFAULT_DOM0_MEM = 512 * MiB
DEFAULT_DOM0_VCPUS = 2
KNOWN = ("liveupdate", "dom0_mem", "dom0_max_vcpus", "crashkernel", "nr_cpus", "console",
         "lu_quiesce_timeout", "lu_fault", "lu_stop", "ram_sparse", "workload_rate", "iommu",
         "loglvl", "guest_loglvl", "com1", "com2", "noreboot", "sync_console")
MAX_CMDLINE = 1023      # xen_commandline_t holds 1024 bytes with the NUL
VALUED = ("liveupdate", "dom0_mem", "dom0_max_vcpus", "crashkernel", "nr_cpus",
          "lu_quiesce_timeout", "lu_fault", "lu_stop", "workload_rate", "iommu")


class BootLineError(HypervSimError):
    pass


class BootOptions:
    def __init__(self, text=""):
        self.text = text
        self.liveupdate_size = 0        # bytes of LU bootmem; 0: none reserved
        self.liveupdate_base = None     # set when handed over by a live update
        self.dom0_mem = DEFAULT_DOM0_MEM
        self.dom0_max_vcpus = DEFAULT_DOM0_VCPUS
        self.crash_size = 0
        self.crash_base = None
        self.nr_cpus = None
        self.lu_quiesce_timeout_ms = 2000
        self.lu_fault = None            # debug: fail a live update at this named point
        self.lu_stop = None             # debug: stop (SIGSTOP) xen#2 there, for a debugger or a kill
        self.ram_sparse = False         # frames not reserved on disk: hosts larger than the disk
        self.workload_rate = DEFAULT_WORKLOAD_RATE   # steps/s of a new domain's vCPUs; 0: max
        self.iommu_intpost = True       # posted interrupts (Xen: iommu=[no-]intpost)
        self.unknown = []


def split_words(text):
    """Words separated by blanks; quotes group a value with blanks in it and
    are removed.  By hand, not shlex: this runs in every hypervisor start,
    and shlex would import the re module there."""
    words, word, quote, in_word = [], [], None, False
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                word.append(ch)
        elif ch in "'\"":
            quote, in_word = ch, True
        elif ch in " \t\n":
            if in_word:
                words.append("".join(word))
            word, in_word = [], False
        else:
            word.append(ch)
            in_word = True
    if quote:
        raise BootLineError("command line %r: no closing quotation" % text)
    if in_word:
        words.append("".join(word))
    return words


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
    for word in split_words(text):
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
                from .faultpoints import FAULT_POINTS, FAULT_POINTS_SUMMARY, FORBIDDEN_ACTS
                if value not in FAULT_POINTS + FORBIDDEN_ACTS:
                    raise BootLineError("lu_fault=%s: not a fault point (%s)" % (value, FAULT_POINTS_SUMMARY))
                opts.lu_fault = value
            elif name == "ram_sparse":
                if has_value:
                    raise BootLineError("ram_sparse takes no value")
                opts.ram_sparse = True
            elif name == "workload_rate":
                try:
                    opts.workload_rate = parse_workload_rate(value)
                except ValueError:
                    raise BootLineError("workload_rate=%s: %s" % (value, RATE_FORMS))
            elif name == "iommu":
                # Xen's iommu= takes a comma-separated list; the simulator
                # heeds [no-]intpost, the rest is Xen's business.
                for sub in value.split(","):
                    if sub in ("intpost", "no-intpost"):
                        opts.iommu_intpost = sub == "intpost"
            elif name == "lu_stop":
                from .faultpoints import STOP_POINTS
                if value not in STOP_POINTS:
                    raise BootLineError("lu_stop=%s: not one of xen#2's points (%s)"
                                        % (value, ", ".join(STOP_POINTS)))
                opts.lu_stop = value
            elif name not in KNOWN:
                opts.unknown.append(word)
        except BootLineError:
            raise
        except FormatError as e:
            raise BootLineError("%s: %s" % (word, e))
    return opts
