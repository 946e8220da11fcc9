"""hyperv-sim: boot, inspect and drive a simulated Xen host (xl-like)."""
import os

import click

from importlib.metadata import version

from cli_common import print_fields, print_json, print_table, run
from cli_common import state_dir_option as cli_state_dir_option
from xen_public.errors import FormatError
from xen_public.privcmd import SocketPrivcmd, default_state_dir
from xen_public.abi import PAGE_SIZE, version_text
from xen_public.units import MiB, addr_text, count, parse_size, size_text

from .errors import USER_ERRORS, HypervSimError

DEFAULT_CMDLINE = "liveupdate=64M dom0_mem=512M"


def _size(default_unit):
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            return parse_size(value, default_unit=default_unit, what=param.opts[0])
        except FormatError as e:
            raise click.BadParameter(str(e))
    return convert


state_dir_option = cli_state_dir_option(default_state_dir)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _toolstack(state_dir, op, **args):
    return SocketPrivcmd(state_dir).toolstack(op, **args)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("kexec-lu"), "-v", "--version", prog_name="hyperv-sim")
def cli():
    """A simulated Xen host: real RAM in a file, domains, Xen's kexec
    hypercalls over a privcmd socket.

    \b
    Typical use:
      hyperv-sim mkimage --xen-version 4.18 -o xen-4.18.gz
      hyperv-sim boot --memory 8G xen-4.18.gz
      hyperv-sim create --type hvm --memory 1G --vcpus 2 guest1
      hyperv-sim list
      hyperv-sim shutdown
    """


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--memory", default="8G", show_default=True, callback=_size("M"),
              help="Host RAM (a number in MiB, or with a unit K/M/G/T).")
@click.option("--cmdline", default=DEFAULT_CMDLINE, show_default=True,
              help="The hypervisor's boot command line (liveupdate=, dom0_mem=, "
                   "dom0_max_vcpus=, crashkernel=, nr_cpus=).")
@click.option("--discard", is_flag=True,
              help="Throw away the RAM a host left behind when it stopped without powering "
                   "off (its domains, or a live update `recover` could finish).")
@state_dir_option
@json_option
def boot(image, memory, cmdline, discard, state_dir, as_json):
    """Power on a host and boot IMAGE on it; returns once it answers.
    Refuses a directory whose host stopped without powering off, unless
    --discard."""
    from .bootloader import boot as do_boot
    result = do_boot(image, state_dir, memory, cmdline, discard=discard)
    if as_json:
        print_json(result)
    else:
        print_fields([("hypervisor", "Xen %s, pid %d" % (result["xen_version"], result["pid"])),
                      ("memory", size_text(memory)),
                      ("xen at", "%s (%s)" % (addr_text(result["xen_start"]), result["placement"])),
                      ("command line", cmdline),
                      ("state dir", state_dir),
                      ("disk", "RAM may take up to %s; %s free there%s"
                       % (size_text(memory), size_text(result["disk_free"]),
                          "" if result["disk_free"] >= memory else
                          " (guests beyond that are refused at create)"))], title="host booted")


@cli.command()
@click.option("--image", required=True, type=click.Path(dir_okay=False),
              help="The hypervisor image to finish the restore with (the same or another).")
@state_dir_option
@json_option
def recover(image, state_dir, as_json):
    """Finish a live update that did not complete (xen#2 halted, killed or
    crashed, or an earlier recover cut short): start IMAGE on the same RAM,
    from the breadcrumb and stream in it.  Needs no running hypervisor."""
    from .bootloader import recover as do_recover
    result = do_recover(image, state_dir)
    if as_json:
        print_json(result)
    else:
        click.echo("recovered with Xen %s (pid %d), after: %s" % (result["xen_version"], result["pid"],
                                                                 result["halted_reason"]))


@cli.command()
@state_dir_option
def shutdown(state_dir):
    """Power the host off (its RAM is discarded)."""
    from .bootloader import shutdown as do_shutdown
    pid = do_shutdown(state_dir)
    click.echo("hypervisor%s stopped" % (" (pid %d)" % pid if pid else ""))


@cli.command()
@click.option("--xen-version", required=True,
              help="Version the image claims: X.Y (meaning X.Y.0, as Xen's build), X.Y.Z, X.Y-extra.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="File to write.")
@click.option("--elf64", is_flag=True, help="Write an ELF64 x86-64 image instead of ELF32.")
@click.option("--no-gzip", is_flag=True, help="Write the ELF file uncompressed.")
@click.option("--text-size", default="1M", show_default=True, callback=_size("B"),
              help="Bytes of image contents (file part of the load segment).")
@click.option("--mem-size", default=None, callback=_size("B"),
              help="Bytes the image occupies in memory (default: text size + 2M).")
@click.option("--no-relocatable", is_flag=True, help="Leave out the multiboot2 relocatable tag.")
@click.option("--no-live-update", is_flag=True,
              help="Leave out the stream note: a bootable image that cannot restore a "
                   "live-update stream.")
@click.option("--no-personality", is_flag=True,
              help="Leave out every XenLU note, like a real Xen build: inspectable and "
                   "loadable, not bootable by the simulator.")
def mkimage(xen_version, output, elf64, no_gzip, text_size, mem_size, no_relocatable,
            no_live_update, no_personality):
    """Write a Xen-like image the simulator can boot and live-update into."""
    from .mkimage import parse_version, write_image
    try:
        write_image(output, xen_version=xen_version, elf_class=64 if elf64 else 32,
                    gzip=not no_gzip, text_size=text_size, mem_size=mem_size,
                    relocatable=not no_relocatable, personality=not no_personality,
                    lu=not no_live_update)
    except ValueError as e:
        raise HypervSimError("mkimage: %s" % e)
    except OSError as e:
        raise HypervSimError("mkimage: cannot write %s: %s" % (output, e.strerror))
    click.echo("wrote %s (Xen %s)" % (output, version_text(*parse_version(xen_version))))


def xl_info_lines(data):
    """[(key, value)] as `xl info` prints them: the host (dom0's uname),
    its CPUs and memory in MiB, Xen's version and command line, in xl's
    order; then the simulator's own keys."""
    uts = os.uname()
    lu, crash = data["lu_bootmem"], data["crash"]

    def region(r):
        return "%s-%s (%s)" % (addr_text(r["start"]), addr_text(r["start"] + r["size"]),
                               size_text(r["size"])) if r["size"] else "none"
    versions = data["live_update_stream_versions"]
    return [
        ("host", uts.nodename), ("release", uts.release), ("version", uts.version),
        ("machine", uts.machine),
        ("nr_cpus", data["nr_cpus"]), ("max_cpu_id", data["nr_cpus"] - 1), ("nr_nodes", 1),
        ("total_memory", data["total_memory"] // MiB), ("free_memory", data["free_memory"] // MiB),
        ("xen_major", data["xen_major"]), ("xen_minor", data["xen_minor"]), ("xen_extra", data["xen_extra"]),
        ("xen_version", data["xen_version"]), ("xen_pagesize", PAGE_SIZE),
        ("xen_commandline", data["cmdline"]),
        # The simulator's own, after xl's.
        ("xen_image", region(data["xen"])), ("lu_bootmem", region(lu)), ("crash_region", region(crash)),
        ("frame_table", region(data["frametable"])),
        ("lu_stream_versions", "-".join(map(str, versions)) if versions else "none"),
        ("nr_domains", data["domains"]),
        ("kexec_loaded", " ".join(t for t, v in sorted(data["kexec"].items()) if v) or "none"),
        ("devices", ", ".join("%s d%d pid %d rx %d dropped %d tx %d"
                              % (d["bdf"], d["domid"], d["pid"], d["rx_delivered"], d["rx_dropped"], d["tx_sent"])
                              for d in data["devices"]) or "none"),
        ("ram_on_disk", size_text(data["ram_disk_usage"])),
        ("pid", data["pid"]), ("incarnation", data["incarnation"]),
    ]


# xl info's layout: the key padded to 23 columns, then ": ".
XL_INFO_KEY_WIDTH = 23


@cli.command()
@click.argument("key", required=False)
@state_dir_option
@json_option
def info(key, state_dir, as_json):
    """Show the host as xl info does (key : value): dom0's uname, CPUs,
    memory in MiB, Xen's version and command line, then the simulator's
    keys (LU bootmem, frame table, loaded images...).  KEY: its value alone."""
    data = _toolstack(state_dir, "info")
    if as_json:
        print_json(data)
        return
    lines = xl_info_lines(data)
    if key is not None:
        values = [v for k, v in lines if k == key]
        if not values:
            raise HypervSimError("no such info key: %s (one of %s)" % (key, ", ".join(k for k, _ in lines)))
        click.echo(values[0])
        return
    for k, v in lines:
        click.echo("%s: %s" % (k.ljust(XL_INFO_KEY_WIDTH), v))


@cli.command(name="list")
@click.argument("domain", required=False)
@click.option("-l", "--long", "long_", is_flag=True,
              help="Everything about the domains (P2M, ports, grants, mappings), as JSON.")
@click.option("-v", "--verbose", is_flag=True,
              help="Add the simulator's columns: type, steps run, passthrough devices.")
@state_dir_option
@json_option
def list_(domain, long_, verbose, state_dir, as_json):
    """List domains as xl list does: name, id, memory, vCPUs, state
    (r-----, -b----, --p---, -----d), CPU time; -v adds type and steps."""
    if long_:
        print_json(_toolstack(state_dir, "details", domain=domain))
        return
    doms = _toolstack(state_dir, "list")
    if domain is not None:
        doms = [d for d in doms if str(d["domid"]) == domain or d["name"] == domain]
        if not doms:
            raise HypervSimError("no such domain: %s" % domain)
    if as_json:
        print_json(doms)
        return
    for line in xl_list_lines(doms, verbose):
        click.echo(line)


def xl_list_lines(doms, verbose):
    """xl list's layout, column for column, plain on a terminal too (scripts
    and eyes read it the same); -v appends the simulator's type, steps and
    passthrough devices."""
    head = "%-40s %5s %5s %5s\tState\tTime(s)" % ("Name", "ID", "Mem", "VCPUs")
    yield head + ("   Type        Steps  PCI" if verbose else "")
    for d in doms:
        line = "%-40s %5d %5d %5d     %s  %8.1f" % (d["name"], d["domid"], d["memory"] // MiB, d["vcpus"],
                                                    d["xl_state"], d["cpu_time_s"])
        yield line + ("   %-4s %12d  %s" % (d["type"], d["steps"], ",".join(d["pci"]) or "-") if verbose else "")


@cli.command()
@click.argument("name", required=False)
@click.option("-f", "--config", "config_file", type=click.Path(dir_okay=False),
              help="An xl-style domain configuration file; flags override its values.")
@click.option("--type", "dtype", type=click.Choice(["pv", "pvh", "hvm"]), default=None,
              help="Domain type.  [default: pv]")
@click.option("--memory", default=None, callback=_size("M"),
              help="Guest memory (MiB, or with a unit).  [default: 512]")
@click.option("--vcpus", default=None, type=click.IntRange(1, 128),
              help="Number of virtual CPUs.  [default: 1]")
@click.option("--event-channel-abi", type=click.Choice(["2-level", "fifo"]), default=None,
              help="Event channel ABI.  [default: 2-level]")
@click.option("--grant-version", type=click.IntRange(1, 2), default=None,
              help="Grant table version.  [default: 1]")
@click.option("--pci", multiple=True, metavar="BDF",
              help="Pass a PCI device through (repeatable), e.g. 0000:03:00.0.")
@click.option("--workload", type=click.Choice(["busy", "idle"]), default=None,
              help="What the vCPUs run.  [default: busy]")
@click.option("--workload-pages", type=click.IntRange(1, 4096), default=None,
              help="Guest pages each vCPU's workload writes.  [default: 16]")
@click.option("--workload-rate", metavar="RATE", default=None,
              help="Steps a second per vCPU (100k, 2M, ...) or max.  [default: the host's "
                   "workload_rate=, 100k]")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=None,
              help="Workload seed (default: random).")
@state_dir_option
@json_option
def create(name, config_file, dtype, memory, vcpus, event_channel_abi, grant_version, pci,
           workload, workload_pages, workload_rate, seed, state_dir, as_json):
    """Create and start a domain: from a config file (-f FILE, or FILE as
    xl create takes it), flags, or both."""
    from .xlcfg import load_config, looks_like_config, merge_flags
    if config_file is None and name is not None and looks_like_config(name):
        config_file, name = name, None          # `hyperv-sim create web.cfg`, as xl create
    cfg = load_config(config_file, name) if config_file else None
    cfg = merge_flags(cfg, name=name, type=dtype, memory=memory, vcpus=vcpus,
                      event_channel_abi=event_channel_abi, grant_version=grant_version,
                      pci=list(pci) or None, workload=workload, workload_pages=workload_pages,
                      workload_rate=workload_rate, seed=seed)
    dom = _toolstack(state_dir, "create", **cfg.to_request())
    if as_json:
        print_json(dom)
    else:
        click.echo("created d%d %s (%s, %s, %s)" % (dom["domid"], dom["name"], dom["type"],
                                                    size_text(dom["memory"]), count(dom["vcpus"], "vCPU")))


@cli.command()
@click.argument("domain")
@click.option("--no-detach", is_flag=True,
              help="Leave dom0's mappings of the domain in place, as a hung backend would: "
                   "the domain stays dying until `hyperv-sim detach`.")
@state_dir_option
def destroy(domain, no_detach, state_dir):
    """Destroy DOMAIN (a name or domid); its memory is scrubbed once nobody maps it."""
    _toolstack(state_dir, "destroy", domain=domain, detach=not no_detach)
    remaining = [d for d in _toolstack(state_dir, "list") if d["name"] == domain or str(d["domid"]) == domain]
    click.echo("%s is dying: dom0 still maps it" % domain if remaining else "destroyed %s" % domain)


def _domain_command(op, verb, doc):
    @click.argument("domain")
    @state_dir_option
    def command(domain, state_dir):
        _toolstack(state_dir, op, domain=domain)
        click.echo("%s %s" % (verb, domain))
    command.__doc__ = doc
    return cli.command(name=op)(command)


_domain_command("pause", "paused", "Pause every vCPU of DOMAIN.")
_domain_command("unpause", "unpaused", "Let DOMAIN run again.")
_domain_command("detach", "detached", "dom0's backends and device model release their mappings "
                "of DOMAIN (as when its frontend goes away); a dying domain then goes.")


@cli.command()
@state_dir_option
@json_option
def verify(state_dir, as_json):
    """Check every domain: memory and registers against their step counts,
    frame ownership, reference counts, event channels, IOMMU mappings.
    Exits 0 only if everything holds."""
    report = _toolstack(state_dir, "verify")
    if as_json:
        print_json(report)
    else:
        for d in report["domains"]:
            click.echo("d%-3d %-16s %-8s %d steps" % (d["domid"], d["name"], d["state"], d["steps"]))
        for p in report["problems"]:
            who = "host" if p["domid"] is None else "d%d" % p["domid"]
            click.echo("PROBLEM %s %s: %s" % (who, p["check"], p["detail"]))
        click.echo("verify: %s" % ("all checks hold" if report["ok"] else
                                   "%d problems" % len(report["problems"])))
    if not report["ok"]:
        raise click.exceptions.Exit(1)


@cli.group()
def stream():
    """Live-update streams: save the host's state as one, decode one."""


@stream.command(name="save")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write.")
@state_dir_option
def stream_save(output, state_dir):
    """Write the running host's state as a live-update stream (its vCPUs
    are held at a step boundary while it is written)."""
    import base64
    data = base64.b64decode(_toolstack(state_dir, "stream-save"))
    try:
        with open(output, "wb") as f:
            f.write(data)
    except OSError as e:
        raise HypervSimError("cannot write %s: %s" % (output, e.strerror))
    click.echo("wrote %s (%d bytes)" % (output, len(data)))


@stream.command(name="dump")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@state_dir_option
@json_option
def stream_dump(file, state_dir, as_json):
    """Decode a stream record by record: FILE, or without it the stream a
    halted hypervisor could not restore."""
    import base64
    from .liveupdate.dump import dump
    from .liveupdate.stream import StreamError
    if file:
        try:
            with open(file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HypervSimError("cannot read %s: %s" % (file, e.strerror))
    else:
        data = base64.b64decode(_toolstack(state_dir, "stream-read"))
    try:
        rows = dump(data)
    except StreamError as e:
        raise HypervSimError("invalid stream: %s" % e)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        click.echo(("0x%08x  %-24s %8d  %s" % (r["offset"], r["what"], r["length"], r.get("summary", ""))).rstrip())


@cli.command()
@state_dir_option
@json_option
def history(state_dir, as_json):
    """Every live update of this host since it booted: refused, aborted,
    complete, halted, and each recovery, oldest first."""
    from . import history as hist
    from . import statedir
    statedir.check(state_dir, create=False)
    entries = hist.read(state_dir)
    if as_json:
        print_json(entries)
        return
    print_table(["ID", "Time (UTC)", "From", "To", "Outcome", "Blackout(ms)"],
                [["%016x" % e["id"] if e["id"] is not None else "-", e["time"].replace("T", " ")[:-1],
                  e["from_version"] or "-", e["to_version"] or "-", e["outcome"],
                  "%.1f" % e["blackout_ms"] if e["blackout_ms"] is not None else "-"]
                 for e in entries])


@cli.command()
@click.option("-c", "--clear", is_flag=True, help="Clear the console after showing it (as xl dmesg -c).")
@state_dir_option
def dmesg(clear, state_dir):
    """Show the hypervisor's console (like xl dmesg): every hypervisor's
    lines since the last clear, earlier ones' across live updates."""
    for line in _toolstack(state_dir, "dmesg", **({"clear": True} if clear else {})):
        click.echo(line)


@cli.command(name="run", context_settings={"ignore_unknown_options": True,
                                           "allow_interspersed_args": False})
@state_dir_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_tool(state_dir, command):
    """Run an unmodified Xen tool against this host, as in its dom0.

    \b
    The tool (kexec-tools' kexec, kexec-lu's real-Xen backend, anything
    built on libxenctrl) sees a PV control domain: /proc/xen/capabilities
    says control_d, /dev/xen/privcmd's hypercalls go to the host, and Xen's
    CPUID leaves answer.  It never reaches this machine: network-interface
    changes (kexec's ifdown without -x), reboot and kexec_load are refused.
    HYPERV_SIM_DIR is removed from its environment.

    \b
    Example:
      hyperv-sim run -- kexec --load-live-update xen-4.19.elf
      hyperv-sim run -- kexec --exec-live-update -x
    """
    from .bridge import run
    run(state_dir, command)


def main(argv=None):
    run(cli, "hyperv-sim", USER_ERRORS, argv)
