"""`hyperv-sim boot`: what GRUB does for Xen, on a simulated machine.

Creates host RAM, places the image per its multiboot2 relocatable tag, writes
the boot-information page and starts the hypervisor process at it.  Nothing
is left behind if any step fails.

The one module of hyperv_sim that uses the dom0 tool: it reads and places
images with kexec_lu's image reader and window planner, as GRUB has its own
ELF and multiboot2 reader (tests/test_architecture.py keeps it the only one).
"""
import os
import signal
import subprocess
import time

from kexec_lu import window
from kexec_lu.errors import KexecLuError
from kexec_lu.image import load_image
from kexec_lu.loader import remove_parameter
from xen_public import bootinfo, privcmd
from xen_public.abi import PAGE_SIZE
from xen_public.errors import Busy, HypervisorUnavailable
from xen_public.units import MiB, align_down, align_up

from . import bootline, history, pending, statedir
from .errors import HypervSimError
from .liveupdate.handover import clear_boot_information
from .xlcfg import MAX_MEMORY
from .chipset import path_beside as chipset_path
from .xen import CONSOLE_FILE, PID_FILE, RAM_FILE, SOCKET_FILE
from .xen_command import xen_argv

BOOTINFO_ADDR = pending.FIRST_BOOTINFO_ADDR    # in low memory, as a boot loader would put it
MIN_MEMORY = 64 * MiB
BOOT_TIMEOUT = 60.0
STDERR_FILE = "xen.stderr"


class LoaderError(HypervSimError):
    """The boot loader cannot start a host: the image, the memory, the state
    directory, or the hypervisor it started did not come up."""


def _read_image(path):
    try:
        return load_image(path)
    except KexecLuError as e:
        raise LoaderError(str(e)) from None


def place_image(image, ram_size):
    """Where the image goes: (start, how).  Per the relocatable tag if any."""
    reloc = image.relocatable
    if reloc is None:
        return image.load_start, "link address"
    align = max(reloc.align, PAGE_SIZE)
    top = min(reloc.max_addr + 1, ram_size)
    if reloc.preference == 1:       # low
        start = align_up(max(reloc.min_addr, MiB), align)
    else:                            # none or high: as high as allowed
        start = align_down(top - image.load_size, align)
    if start < reloc.min_addr or start + image.load_size > top:
        raise LoaderError("image of %d bytes cannot be placed in [0x%x, 0x%x) with alignment 0x%x"
                        % (image.load_size, reloc.min_addr, top, align))
    return start, "relocatable tag"


def _alive(pid):
    """True while pid runs; a zombie (our own exited child) counts as gone."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    return not privcmd.process_gone(pid)


def running_pid(state_dir):
    """The pid of the hypervisor serving this directory, or None."""
    try:
        with statedir.open_text(os.path.join(state_dir, PID_FILE), "r") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _alive(pid) else None


def power_on(image_path, state_dir, memory, cmdline, discard=False):
    """Everything up to the jump: host RAM with the image and the boot
    information in it.  Returns (ram_path, entry, summary).  RAM a host
    left behind is never replaced unless `discard` says so."""
    if not MIN_MEMORY <= memory <= MAX_MEMORY or memory % MiB:
        raise LoaderError("memory %d bytes: must be a whole number of MiB between 64M and 16T" % memory)
    if bootline.parse(cmdline).liveupdate_base is not None:
        raise LoaderError("liveupdate=SIZE@BASE is what a live update hands the new hypervisor; "
                        "boot a host with liveupdate=SIZE (hyperv-sim recover restarts one)")
    image = _read_image(image_path)
    if image.mb2 is None:
        raise LoaderError("%s: no multiboot2 header in the first 32 KiB: not bootable" % image_path)
    if image.lu_image_size is None or image.xen_version is None or image.xen_version.source != "note":
        raise LoaderError("%s carries no hyperv-sim personality notes: it can be inspected "
                        "(kexec-lu info) and loaded, not run; build one with hyperv-sim mkimage"
                        % image_path)
    start, how = place_image(image, memory)
    statedir.check(state_dir)
    statedir.check_files(state_dir, (PID_FILE, CONSOLE_FILE, STDERR_FILE, statedir.LOCK_FILE))
    if running_pid(state_dir):
        raise LoaderError("a host is already running in %s (hyperv-sim shutdown stops it)" % state_dir)

    ram_path = os.path.join(state_dir, RAM_FILE)
    _clear_leftovers(state_dir, ram_path, discard)
    from hyperv_sim.ram import HostRAM   # the C core is needed only from here
    from hyperv_sim.chipset import Chipset
    eip = start + (image.entry - image.load_start)
    # multiboot2's basic meminfo is 32-bit KiB: loaders report what fits.
    page = bootinfo.build_page(BOOTINFO_ADDR, eip=eip, cmdline=cmdline, load_base_addr=start,
                               mem_lower_kib=640, mem_upper_kib=min((memory - MiB) >> 10, 0xFFFFFFFF),
                               loader_name="hyperv-sim boot", image=image_path)
    ram = HostRAM.create(ram_path, memory)
    try:
        loaded = image.loaded_bytes()
        ram.reserve(start, len(loaded))
        ram.reserve(BOOTINFO_ADDR, PAGE_SIZE)
        ram.write(start, loaded)
        ram.write(BOOTINFO_ADDR, page)
        ram.map.flush()
        # The rest of the machine's hardware powers on with RAM.
        Chipset.create(chipset_path(ram_path)).close()
    except BaseException:
        ram.close()
        os.unlink(ram_path)
        raise
    ram.close()
    disk = os.statvfs(state_dir)
    summary = {"disk_free": disk.f_bavail * disk.f_frsize,
               "state_dir": state_dir, "memory": memory, "xen_start": start, "placement": how,
               "image": str(image_path), "xen_version": str(image.xen_version), "cmdline": cmdline}
    return ram_path, BOOTINFO_ADDR, summary


def _clear_leftovers(state_dir, ram_path, discard):
    """A RAM file here is a host that stopped without powering off: its
    domains, or a live update's stream, are in it.  Refuse unless told."""
    if os.path.islink(ram_path) and not discard:
        raise LoaderError("%s is a symlink, not host RAM; refusing (`hyperv-sim boot --discard` "
                          "removes the link)" % ram_path)
    if os.path.lexists(ram_path):
        if not discard:
            raise LoaderError("%s holds the RAM of a host that stopped without powering off%s; "
                              "`hyperv-sim boot --discard` throws it away" % (ram_path, _pending_hint(ram_path)))
        os.unlink(ram_path)
    if os.path.lexists(chipset_path(ram_path)):
        from hyperv_sim.devices import stop_devices_beside
        stop_devices_beside(ram_path)      # the devices of a machine being thrown away stop with it
        os.unlink(chipset_path(ram_path))   # the hardware of a machine whose RAM is gone
    sock = os.path.join(state_dir, SOCKET_FILE)
    if os.path.lexists(sock):
        os.unlink(sock)


def _pending_hint(ram_path):
    from hyperv_sim.ram import HostRAM, RamError
    try:
        ram = HostRAM.open(ram_path)
    except RamError:
        return ""
    try:
        pending.find(ram)
        return (" and a live update that did not finish: `hyperv-sim recover --image IMAGE` "
                "restores every domain from it")
    except pending.NothingPending:
        return ""
    finally:
        ram.close()


def boot(image_path, state_dir, memory, cmdline, discard=False):
    """Boot a host; returns a summary dict once the hypervisor answers."""
    statedir.check(state_dir)
    with statedir.locked(state_dir):
        ram_path, entry, summary = power_on(image_path, state_dir, memory, cmdline, discard)
        try:
            summary["pid"] = _start_hypervisor(state_dir, ram_path, entry)
        except HypervSimError:
            # Nothing left behind: the RAM this boot made goes with it (no
            # hypervisor runs on it: it never started, died or was killed).
            for path in (ram_path, chipset_path(ram_path)):
                if os.path.exists(path):
                    os.unlink(path)
            raise
    return summary


def _start_hypervisor(state_dir, ram_path, entry, fresh_console=True):
    err_path = os.path.join(state_dir, STDERR_FILE)
    console = os.path.join(state_dir, CONSOLE_FILE)
    if fresh_console:
        statedir.open_text(console, "w").close()   # a new machine, a new log
        history.start_afresh(state_dir)             # and a history of its own
    # Its last words are in what this start adds (recover keeps the old log).
    console_from = os.path.getsize(console) if os.path.exists(console) else 0
    with statedir.open_text(err_path, "w") as err:
        proc = subprocess.Popen(
            xen_argv(ram_path, entry, state_dir),
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            close_fds=True)
    client = privcmd.SocketPrivcmd(state_dir)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LoaderError("hypervisor failed to boot: %s" % _last_words(console, console_from, err_path))
        try:
            answer = client.toolstack("ping")
            if answer.get("halted"):
                raise LoaderError("hypervisor halted at boot: %s" % answer["halted"])
            return proc.pid
        except HypervisorUnavailable:
            time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    raise LoaderError("hypervisor did not answer within %d s" % BOOT_TIMEOUT)


def _last_words(console, console_from, err_path):
    """The hypervisor's own reason: its PANIC line (written since
    console_from), else its stderr."""
    try:
        with open(console, errors="replace") as f:
            f.seek(console_from)
            panics = [l for l in f if "PANIC:" in l]
        if panics:
            return panics[-1].split("PANIC:", 1)[1].strip()
    except OSError:
        pass
    try:
        with open(err_path) as f:
            lines = [l.strip() for l in f if l.strip()]
        return lines[-1] if lines else "no message"
    except OSError:
        return "no message"


def shutdown(state_dir, timeout=30.0):
    pid = running_pid(state_dir)
    privcmd.SocketPrivcmd(state_dir).toolstack("shutdown")
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        if not _alive(pid):
            return pid
        time.sleep(0.02)
    if pid:
        raise LoaderError("hypervisor pid %d did not stop within %d s" % (pid, timeout))
    return pid


def recover(image_path, state_dir):
    """Finish a live update that did not: put IMAGE (the same or another)
    where xen#2 was, at the top of the same window, and start it on the
    same RAM.  Everything comes from RAM (liveupdate/pending.py): a halted
    hypervisor is stopped first, a dead one needs nothing.  Restartable at
    any moment: until the new hypervisor has restored, breadcrumb and
    stream stay as they were."""
    statedir.check(state_dir, create=False)
    image = _read_image(image_path)
    if image.lu is None or image.lu_image_size is None or image.relocatable is None:
        raise LoaderError("%s cannot restore a live-update stream (no XenLU stream note, "
                        "personality or relocatable tag)" % image_path)
    with statedir.locked(state_dir):
        reason = _stop_halted(state_dir)
        ram_path = os.path.join(state_dir, RAM_FILE)
        from hyperv_sim.ram import HostRAM
        ram = HostRAM.open(ram_path)
        try:
            found = pending.find(ram)
            place, cmdline = _place_recovery(image, found)
            _write_recovery(ram, image, place, cmdline, found)
        except pending.NothingPending as e:
            raise LoaderError("nothing to recover in %s: %s" % (state_dir, e)) from None
        finally:
            ram.close()
        # In the history before xen#2's own line (complete, or halted again).
        history.History.of(state_dir).record(
            {"state": "recover", "to_version": str(image.xen_version)}, image=str(image_path),
            halted=reason)
        try:
            pid = _start_hypervisor(state_dir, ram_path, place.bootinfo_addr, fresh_console=False)
        except LoaderError as e:
            raise LoaderError("recovery with %s failed too: %s (RAM and breadcrumb are still there)"
                              % (image_path, e))
    return {"pid": pid, "image": str(image_path), "xen_version": str(image.xen_version),
            "xen_start": place.image_start, "cmdline": cmdline, "halted_reason": reason}


def _stop_halted(state_dir):
    """Make sure no hypervisor runs on the RAM: stop a halted one (it keeps
    RAM), refuse a running one.  -> why the update did not finish."""
    pid = running_pid(state_dir)
    if not pid:
        return "the hypervisor had stopped (%s)" % _last_words(
            os.path.join(state_dir, CONSOLE_FILE), 0, os.path.join(state_dir, STDERR_FILE))
    try:
        answer = privcmd.SocketPrivcmd(state_dir).toolstack("ping")
    except HypervisorUnavailable:
        raise Busy("the hypervisor (pid %d) in %s runs but does not answer: a live update may "
                   "be under way; retry, or stop it (kill %d) to recover" % (pid, state_dir, pid))
    if not answer.get("halted"):
        raise LoaderError("the hypervisor in %s is running, not halted: nothing to recover" % state_dir)
    shutdown(state_dir)          # a halted hypervisor keeps RAM when it stops
    return answer["halted"]


def _place_recovery(image, found):
    """The window and command line xen#2 had, for IMAGE."""
    reloc = image.relocatable
    try:
        place = window.plan_liveupdate(found.lu_start, found.lu_size, found.xen_start,
                                       found.xen_size, image.load_size, reloc.align,
                                       reloc.min_addr, reloc.max_addr)
    except KexecLuError as e:
        raise LoaderError(str(e)) from None
    # The same command line, with the new bootmem; a debug fault or stop
    # injected into the failed attempt is not repeated.
    kept = found.cmdline
    for name in ("liveupdate", "lu_fault", "lu_stop"):
        kept = remove_parameter(kept, name)
    return place, " ".join(p for p in (kept, place.liveupdate_param()) if p)


def _write_recovery(ram, image, place, cmdline, found):
    """Image, then its boot information; then the entry it replaces goes
    (unless the image now covers it), so that one entry is pending."""
    eip = place.image_start + (image.entry - image.load_start)
    page = bootinfo.build_page(place.bootinfo_addr, eip=eip, cmdline=cmdline,
                               load_base_addr=place.image_start, mem_lower_kib=640,
                               mem_upper_kib=0, loader_name="hyperv-sim recover",
                               image=image.path)
    loaded = image.loaded_bytes()
    ram.reserve(place.image_start, len(loaded))
    ram.reserve(place.bootinfo_addr, PAGE_SIZE)
    ram.write(place.image_start, loaded)
    ram.write(place.bootinfo_addr, page)
    ram.map.flush()
    regs = found.handoff.regs_addr
    covered = place.image_start <= regs < place.image_start + image.load_size
    if regs != place.bootinfo_addr and not covered:
        clear_boot_information(ram, found.handoff)
        ram.map.flush()
