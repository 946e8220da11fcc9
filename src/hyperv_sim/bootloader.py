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
import stat
import subprocess
import time

from kexec_lu import window
from kexec_lu.errors import KexecLuError
from kexec_lu.image import load_image
from kexec_lu.loader import remove_parameter
from xen_public import bootinfo, privcmd
from xen_public.abi import PAGE_SIZE
from xen_public.errors import HypervisorUnavailable
from xen_public.units import MiB, align_down, align_up

from . import bootline
from .errors import HypervSimError
from .xen import CONSOLE_FILE, PID_FILE, RAM_FILE, SOCKET_FILE
from .xen_command import xen_argv

BOOTINFO_ADDR = 0x1000          # in low memory, as a boot loader would put it
MIN_MEMORY = 64 * MiB
MAX_MEMORY = 16 << 40
BOOT_TIMEOUT = 60.0


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


def check_state_dir(path):
    """Create the state directory (0700) or check one we were given."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.geteuid():
        raise LoaderError("state directory %s belongs to uid %d, not to you" % (path, st.st_uid))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LoaderError("state directory %s is writable by others; refusing" % path)


def _alive(pid):
    """True while pid runs; a zombie (our own exited child) counts as gone."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def running_pid(state_dir):
    """The pid of the hypervisor serving this directory, or None."""
    try:
        with open(os.path.join(state_dir, PID_FILE)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def power_on(image_path, state_dir, memory, cmdline):
    """Everything up to the jump: host RAM with the image and the boot
    information in it.  Returns (ram_path, entry, summary)."""
    if not MIN_MEMORY <= memory <= MAX_MEMORY or memory % MiB:
        raise LoaderError("memory %d bytes: must be a whole number of MiB between 64M and 16T" % memory)
    if bootline.parse(cmdline).liveupdate_base is not None:
        raise LoaderError("liveupdate=SIZE@BASE is what a live update hands the new hypervisor; "
                        "boot a host with liveupdate=SIZE")
    image = _read_image(image_path)
    if image.mb2 is None:
        raise LoaderError("%s: no multiboot2 header in the first 32 KiB: not bootable" % image_path)
    if image.lu_image_size is None or image.xen_version is None or image.xen_version.source != "note":
        raise LoaderError("%s carries no hyperv-sim personality notes: it can be inspected "
                        "(kexec-lu info) and loaded, not run; build one with hyperv-sim mkimage"
                        % image_path)
    start, how = place_image(image, memory)
    check_state_dir(state_dir)
    if running_pid(state_dir):
        raise LoaderError("a host is already running in %s (hyperv-sim shutdown stops it)" % state_dir)

    ram_path = os.path.join(state_dir, RAM_FILE)
    for stale in (ram_path, os.path.join(state_dir, SOCKET_FILE)):
        if os.path.exists(stale):
            os.unlink(stale)
    from hyperv_sim.ram import HostRAM   # the C core is needed only from here
    eip = start + (image.entry - image.load_start)
    # multiboot2's basic meminfo is 32-bit KiB: loaders report what fits.
    page = bootinfo.build_page(BOOTINFO_ADDR, eip=eip, cmdline=cmdline, load_base_addr=start,
                               mem_lower_kib=640, mem_upper_kib=min((memory - MiB) >> 10, 0xFFFFFFFF),
                               loader_name="hyperv-sim boot")
    ram = HostRAM.create(ram_path, memory)
    try:
        ram.write(start, image.loaded_bytes())
        ram.write(BOOTINFO_ADDR, page)
        ram.map.flush()
    except BaseException:
        ram.close()
        os.unlink(ram_path)
        raise
    ram.close()
    summary = {"state_dir": state_dir, "memory": memory, "xen_start": start, "placement": how,
               "image": str(image_path), "xen_version": str(image.xen_version), "cmdline": cmdline}
    return ram_path, BOOTINFO_ADDR, summary


def boot(image_path, state_dir, memory, cmdline):
    """Boot a host; returns a summary dict once the hypervisor answers."""
    ram_path, entry, summary = power_on(image_path, state_dir, memory, cmdline)
    try:
        summary["pid"] = _start_hypervisor(state_dir, ram_path, entry)
    except LoaderError:
        if os.path.exists(ram_path):
            os.unlink(ram_path)
        raise
    return summary


def _start_hypervisor(state_dir, ram_path, entry, fresh_console=True):
    err_path = os.path.join(state_dir, "xen.stderr")
    console = os.path.join(state_dir, CONSOLE_FILE)
    if fresh_console:
        open(console, "w").close()   # a new machine, a new log
    # Its last words are in what this start adds (recover keeps the old log).
    console_from = os.path.getsize(console) if os.path.exists(console) else 0
    with open(err_path, "w") as err:
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
    """Finish a live update a halted hypervisor could not: put IMAGE (the
    same or another) where xen#2 was, at the top of the same window, and
    start it on the same RAM.  It restores from the breadcrumb, which the
    halted one left intact."""
    client = privcmd.SocketPrivcmd(state_dir)
    answer = client.toolstack("ping")
    if not answer.get("halted"):
        raise LoaderError("the hypervisor in %s is running, not halted: nothing to recover" % state_dir)
    facts = client.toolstack("halted-info")
    image = _read_image(image_path)
    if image.lu is None or image.lu_image_size is None or image.relocatable is None:
        raise LoaderError("%s cannot restore a live-update stream (no XenLU stream note, "
                        "personality or relocatable tag)" % image_path)
    reloc = image.relocatable
    try:
        place = window.plan_liveupdate(facts["lu_start"], facts["lu_size"], facts["xen_start"],
                                       facts["xen_size"], image.load_size, reloc.align,
                                       reloc.min_addr, reloc.max_addr)
    except KexecLuError as e:
        raise LoaderError(str(e)) from None
    # The same command line, with the new bootmem; a debug fault injected
    # into the failed attempt is not repeated.
    kept = remove_parameter(remove_parameter(facts["cmdline"], "liveupdate"), "lu_fault")
    cmdline = " ".join(p for p in (kept, place.liveupdate_param()) if p)
    eip = place.image_start + (image.entry - image.load_start)
    page = bootinfo.build_page(place.bootinfo_addr, eip=eip, cmdline=cmdline,
                               load_base_addr=place.image_start, mem_lower_kib=640,
                               mem_upper_kib=0, loader_name="hyperv-sim recover")
    shutdown(state_dir)          # a halted hypervisor keeps RAM when it stops
    from hyperv_sim.ram import HostRAM
    ram = HostRAM.open(facts["ram"])
    try:
        ram.write(place.image_start, image.loaded_bytes())
        ram.write(place.bootinfo_addr, page)
        ram.map.flush()
    finally:
        ram.close()
    try:
        pid = _start_hypervisor(state_dir, facts["ram"], place.bootinfo_addr, fresh_console=False)
    except LoaderError as e:
        raise LoaderError("recovery with %s failed too: %s (RAM and breadcrumb are still there)"
                        % (image_path, e))
    return {"pid": pid, "image": str(image_path), "xen_version": str(image.xen_version),
            "xen_start": place.image_start, "cmdline": cmdline, "halted_reason": facts["reason"]}
