"""What kexec-lu does, apart from how it is asked and how it is shown: plan
and load an image, unload, ask what is loaded, read the ranges, execute.
Each action talks to the hypervisor through a XenClient and returns data or
raises a one-line error; kexec_lu.cli (the subcommands) and kexec_lu.compat
(kexec's spellings) both call these and render what they return
(kexec_lu.render).  Nothing here prints.
"""
from xen_public import abi

from .errors import HypercallError, KexecLuError

LOAD_HINTS = {
    abi.EADDRNOTAVAIL: "a segment lies outside the memory allowed for this image type",
    abi.ENOMEM: "not enough free memory to stage the image",
    abi.EINVAL: "the hypervisor rejected the segments or the image type",
}


def client(state_dir=None):
    """A hypercall client: the simulated host in state_dir (or named by
    HYPERV_SIM_DIR), else Xen's privcmd in a control domain."""
    from .hypercall import XenClient
    from .xenprivcmd import open_transport
    return XenClient(open_transport(state_dir))


def kexec_type(name):
    """'liveupdate' (any case) -> KEXEC_TYPE_LIVEUPDATE."""
    return abi.KEXEC_TYPES[name.lower()]


def all_ranges(xc):
    """[(name, id, nr, start, size, errno)] for every range the host has."""
    out = []
    for rid in sorted(abi.KEXEC_RANGE_NAMES):
        nr = 0
        while True:
            try:
                start, size = xc.get_range(rid, nr)
                out.append((abi.KEXEC_RANGE_NAMES[rid], rid, nr, start, size, 0))
            except HypercallError as e:
                if e.errno in (abi.EBUSY, abi.ENODEV):
                    raise          # the hypervisor cannot answer at all
                if nr == 0:
                    out.append((abi.KEXEC_RANGE_NAMES[rid], rid, nr, None, None, e.errno))
                break
            if rid != abi.KEXEC_RANGE_MA_CPU:
                break
            nr += 1
    return out


def ranges_for(xc, ktype):
    """The ranges plan_load needs for an image type."""
    wanted = {abi.KEXEC_TYPE_LIVEUPDATE: (abi.KEXEC_RANGE_MA_LIVEUPDATE, abi.KEXEC_RANGE_MA_XEN),
              abi.KEXEC_TYPE_CRASH: (abi.KEXEC_RANGE_MA_CRASH,),
              abi.KEXEC_TYPE_DEFAULT: ()}[ktype]
    return {rid: xc.get_range(rid) for rid in wanted}


def plan_image(xc, image, ktype, command_line=None, append=None, reuse_cmdline=False,
               mem_min=None, mem_max=None):
    """(image, plan): where IMAGE would go and with what command line."""
    from .image import load_image
    from .loader import compose_cmdline, plan_load
    img = load_image(image)
    lu = ktype == abi.KEXEC_TYPE_LIVEUPDATE
    running = xc.commandline() if reuse_cmdline or lu else None
    cmdline = compose_cmdline(ktype, command_line, append, running if reuse_cmdline else None)
    plan = plan_load(img, ktype, ranges_for(xc, ktype), cmdline, mem_min, mem_max)
    if lu:
        plan.running_cmdline = running
    return img, plan


def load(xc, plan):
    """Hand a plan's segments to the hypervisor (KEXEC_CMD_kexec_load)."""
    try:
        xc.kexec_load(plan.ktype, plan.arch, plan.entry, plan.segments)
    except HypercallError as e:
        hint = LOAD_HINTS.get(e.errno)
        raise KexecLuError("%s (%s; hyperv-sim dmesg has the details)" % (e, hint) if hint else str(e))


def unload(xc, ktype):
    """Unload the image of a type; nothing loaded is not an error."""
    xc.kexec_unload(ktype)


def is_loaded(xc, ktype):
    return bool(xc.kexec_status(ktype))


def live_update(xc, timeout=120.0, progress=None):
    """Trigger the loaded live update and follow it to its final report
    (progress: render.LiveUpdateProgress or None)."""
    from .liveupdate import run_live_update
    return run_live_update(xc, timeout=timeout, progress=progress)


def preflight_check(xc):
    """Every pre-flight check of a live update, and what would block its
    quiesce, with nothing paused (the simulator's toolstack request: real
    Xen makes its checks only inside KEXEC_CMD_kexec)."""
    if not getattr(xc.transport, "has_reports", True):
        raise KexecLuError("a pre-flight check needs a simulated host: real Xen checks a live "
                           "update only inside KEXEC_CMD_kexec, as it starts it")
    return xc.transport.toolstack("lu-check")


def require_done(report):
    """Raise unless the update completed (or, on real Xen, was triggered)."""
    if report["state"] not in ("complete", "triggered"):
        raise KexecLuError("live update %s: %s" % (report["state"], report.get("error")))


def execute(xc, ktype):
    """KEXEC_CMD_kexec for a default or crash image: a reboot, which a
    running host refuses; the refusal said in kexec's terms."""
    name = abi.KEXEC_TYPE_NAMES[ktype]
    try:
        xc.kexec_exec(ktype)
    except HypercallError as e:
        if e.errno == abi.ENOENT:
            raise KexecLuError("nothing has been loaded: no %s image to execute" % name) from None
        if e.errno == abi.EOPNOTSUPP:
            raise KexecLuError("executing the %s image would reboot the host, which this "
                               "hypervisor does not support (%s); to live-update use "
                               "--exec-live-update" % (name, e)) from None
        raise
