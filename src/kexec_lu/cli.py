"""kexec-lu: load a new Xen into the running one and live-update into it.

The subcommand form is the documented one; data flows CLI -> XenClient
(kexec_op) -> privcmd -> hypervisor.
"""
import click

from . import __version__, abi
from .clirun import run
from .errors import HypercallError, KexecLuError
from .output import hexa, print_fields, print_json, print_table
from .units import format_size, human_size, parse_address

TYPE_CHOICE = click.Choice(sorted(abi.KEXEC_TYPES), case_sensitive=False)
STATUS_ERROR = 255      # kexec -S returns -1 on error: exit status 255
LOAD_HINTS = {
    abi.EADDRNOTAVAIL: "a segment lies outside the memory allowed for this image type",
    abi.ENOMEM: "not enough free memory to stage the image",
    abi.EINVAL: "the hypervisor rejected the segments or the image type",
}


def _client():
    from .hypercall import XenClient
    return XenClient()


def _address(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_address(value, what=param.opts[0])
    except KexecLuError as e:
        raise click.BadParameter(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="kexec-lu")
def cli():
    """Load a new Xen hypervisor and live-update the running one into it.

    kexec-lu talks to the hypervisor through privcmd: the simulated host
    named by HYPERV_SIM_DIR (default ~/.local/state/hyperv-sim).

    \b
    Typical use:
      kexec-lu load --type liveupdate xen-new.gz
      kexec-lu status --type liveupdate
    """


# info

@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def info(image, as_json):
    """Show what IMAGE is: format, entry, size, alignment, build-id,
    Xen version and live-update capability."""
    from .image import load_image
    img = load_image(image)
    data = img.to_json()
    if as_json:
        print_json(data)
        return
    reloc = img.relocatable
    lu = data["live_update"]
    print_fields([
        ("file", data["path"]),
        ("format", data["format"]),
        ("class", "ELF%d" % img.elf_class),
        ("machine", img.machine),
        ("entry", hexa(img.entry)),
        ("load address", "%s-%s" % (hexa(img.load_start), hexa(img.load_end))),
        ("load size", "%s (%d bytes)" % (human_size(img.load_size), img.load_size)),
        ("multiboot2", "header at file offset %s" % hexa(img.mb2.offset) if img.mb2 else "none"),
        ("relocatable", "min %s max %s align %s prefer %s" % (
            hexa(reloc.min_addr), hexa(reloc.max_addr), hexa(reloc.align), reloc.preference_name)
         if reloc else "no"),
        ("build-id", img.build_id or "none"),
        ("xen version", "%s (from %s)" % (img.xen_version, img.xen_version.source)
         if img.xen_version else "unknown"),
        ("live update", "stream versions %d-%d, %d record types" % (
            lu["stream_versions"][0], lu["stream_versions"][1], len(lu["record_types"]))
         if lu else "no (the image advertises no live-update restore support)"),
    ])


# ranges

def _all_ranges(client):
    """[(name, id, nr, start, size, errno)] for every range the host has."""
    from .errors import HypercallError
    out = []
    for rid in sorted(abi.KEXEC_RANGE_NAMES):
        nr = 0
        while True:
            try:
                start, size = client.get_range(rid, nr)
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the ranges as JSON.")
def ranges(as_json):
    """Show the hypervisor's KEXEC_RANGE_MA_* memory ranges."""
    import os
    rows = _all_ranges(_client())
    if as_json:
        print_json([{"name": n, "range": r, "nr": nr, "start": s, "size": z,
                     "available": not err, "error": os.strerror(err) if err else None}
                    for n, r, nr, s, z, err in rows])
        return
    table = []
    for name, rid, nr, start, size, err in rows:
        label = "%s %d" % (name, nr) if rid == abi.KEXEC_RANGE_MA_CPU else name
        if err:
            table.append([label, rid, "-", "-", "not available (%s)" % os.strerror(err)])
        else:
            table.append([label, rid, hexa(start), hexa(start + size) if size else "-",
                          "%s" % format_size(size) if size else "0 (none)"])
    print_table(["range", "id", "start", "end", "size"], table)


# load

def _fetch_ranges(client, ktype):
    wanted = {abi.KEXEC_TYPE_LIVEUPDATE: (abi.KEXEC_RANGE_MA_LIVEUPDATE, abi.KEXEC_RANGE_MA_XEN),
              abi.KEXEC_TYPE_CRASH: (abi.KEXEC_RANGE_MA_CRASH,),
              abi.KEXEC_TYPE_DEFAULT: ()}[ktype]
    return {rid: client.get_range(rid) for rid in wanted}


def _show_plan(plan, loaded):
    p = plan.placement
    rows = [("type", abi.KEXEC_TYPE_NAMES[plan.ktype])]
    if p.kind == "liveupdate":
        rows += [
            ("window", "%s-%s (%s)" % (hexa(p.region_start), hexa(p.region_end),
                                       human_size(p.region_end - p.region_start))),
            ("xen#2 image", "%s-%s" % (hexa(p.image_start), hexa(p.image_end))),
            ("xen#2 LU bootmem", "%s-%s (%s)" % (hexa(p.bootmem_start),
                                                 hexa(p.bootmem_start + p.bootmem_size),
                                                 format_size(p.bootmem_size))),
            ("breadcrumb page", hexa(p.breadcrumb_addr)),
        ]
    else:
        rows += [("region", "%s-%s" % (hexa(p.region_start), hexa(p.region_end))),
                 ("image", "%s-%s" % (hexa(p.image_start), hexa(p.image_end)))]
    rows += [
        ("boot info page", hexa(p.bootinfo_addr)),
        ("entry", "%s -> image entry %s" % (hexa(plan.entry), hexa(plan.eip))),
        ("command line", plan.cmdline or "(empty)"),
        ("segments", ", ".join("%s+%s" % (hexa(d), hexa(ds)) for _, d, ds in plan.segments)),
        ("result", "loaded" if loaded else "not loaded (--dry-run)"),
    ]
    print_fields(rows, title="load plan")


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-t", "--type", "ktype", type=TYPE_CHOICE, default="default", show_default=True,
              help="kexec image type: liveupdate, default or crash.")
@click.option("--command-line", "command_line", metavar="STRING",
              help="Command line for the new hypervisor.")
@click.option("--append", metavar="STRING", help="Append STRING to the command line.")
@click.option("--reuse-cmdline", is_flag=True,
              help="Start from the running hypervisor's command line.")
@click.option("--mem-min", callback=_address, metavar="ADDR",
              help="Lowest address to load the image at.")
@click.option("--mem-max", callback=_address, metavar="ADDR",
              help="Highest address the image may reach.")
@click.option("--dry-run", is_flag=True, help="Compute and show the plan; load nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def load(image, ktype, command_line, append, reuse_cmdline, mem_min, mem_max, dry_run, as_json):
    """Load IMAGE (xen.gz or an ELF Xen) for a later exec.

    For --type liveupdate the image goes at the top of the window formed by
    the LU bootmem and the running Xen, and its command line gets
    liveupdate=<size>M@0x<base> naming its own LU bootmem.
    """
    from .image import load_image
    from .loader import compose_cmdline, plan_load
    if command_line is not None and reuse_cmdline:
        raise click.UsageError("--command-line and --reuse-cmdline exclude each other")
    ktype = abi.KEXEC_TYPES[ktype.lower()]
    img = load_image(image)
    client = _client()
    reused = client.commandline() if reuse_cmdline else None
    cmdline = compose_cmdline(ktype, command_line, append, reused)
    plan = plan_load(img, ktype, _fetch_ranges(client, ktype), cmdline, mem_min, mem_max)
    if not dry_run:
        try:
            client.kexec_load(ktype, plan.arch, plan.entry, plan.segments)
        except HypercallError as e:
            hint = LOAD_HINTS.get(e.errno)
            raise KexecLuError("%s (%s; hyperv-sim dmesg has the details)" % (e, hint) if hint else str(e))
    if as_json:
        print_json(dict(plan.to_json(), loaded=not dry_run, image=img.to_json()))
    else:
        _show_plan(plan, loaded=not dry_run)


@cli.command()
@click.option("-t", "--type", "ktype", type=TYPE_CHOICE, default="default", show_default=True,
              help="Which image to unload.")
def unload(ktype):
    """Unload the image of a type (nothing loaded is not an error)."""
    _client().kexec_unload(abi.KEXEC_TYPES[ktype.lower()])


@cli.command()
@click.option("-t", "--type", "ktype", type=TYPE_CHOICE, default="liveupdate", show_default=True,
              help="Which image to ask about.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.pass_context
def status(ctx, ktype, as_json):
    """Is an image of a type loaded?  Exit status as kexec -S: 1 if
    loaded, 0 if not, 255 on error."""
    try:
        loaded = _client().kexec_status(abi.KEXEC_TYPES[ktype.lower()])
    except KexecLuError as e:
        click.echo("kexec-lu: %s" % e, err=True)
        ctx.exit(STATUS_ERROR)
    if as_json:
        print_json({"type": ktype.lower(), "loaded": bool(loaded)})
    else:
        click.echo("%s image %s" % (ktype.lower(), "loaded" if loaded else "not loaded"))
    ctx.exit(1 if loaded else 0)


status.error_status = STATUS_ERROR


@cli.command(name="map")
@click.argument("image", required=False, type=click.Path(dir_okay=False))
@click.option("--svg", "svg_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the picture as SVG to FILE.")
@click.option("--width", default=None, type=click.IntRange(20, 400),
              help="Characters per bar (default: the terminal's width).")
@click.option("--json", "as_json", is_flag=True, help="Print the map as JSON.")
def map_(image, svg_file, width, as_json):
    """Draw the host's memory to scale: RAM, Xen, LU bootmem, the window,
    the breadcrumb page and, given an IMAGE, where a live update would put it."""
    import shutil
    from . import memmap
    client = _client()
    plan = None
    if image:
        from .image import load_image
        from .loader import compose_cmdline, plan_load
        ktype = abi.KEXEC_TYPE_LIVEUPDATE
        plan = plan_load(load_image(image), ktype, _fetch_ranges(client, ktype),
                         compose_cmdline(ktype))
    m = memmap.collect(client, plan)
    if svg_file:
        try:
            with open(svg_file, "w") as f:
                f.write(memmap.render_svg(m))
        except OSError as e:
            raise KexecLuError("cannot write %s: %s" % (svg_file, e.strerror))
    if as_json:
        print_json(m.to_json())
        return
    from .output import to_terminal
    if width is None:
        width = max(20, min(shutil.get_terminal_size((80, 24)).columns - 2, 160)) if to_terminal() else 72
    lines = memmap.render_text(m, width=width, colour=to_terminal())
    if to_terminal():
        from rich.console import Console
        console = Console(highlight=False, soft_wrap=True)
        for line in lines:
            console.print(line)
    else:
        click.echo("\n".join(lines))


@cli.command(name="exec")
@click.option("-t", "--type", "ktype", type=click.Choice(["liveupdate"]), default="liveupdate",
              show_default=True, help="Only a live update can be executed on a running host.")
@click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds to wait for the new hypervisor to report.")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
def exec_(ktype, timeout, as_json):
    """Live-update into the loaded image: quiesce, save, exec, restore.

    Shows each phase as it happens and, once the new hypervisor has restored
    every domain, the blackout (first vCPU paused to last one unpaused).
    """
    from .liveupdate import run_live_update
    report = run_live_update(_client(), timeout=timeout, show=not as_json)
    if as_json:
        print_json(report)
    if report["state"] not in ("complete", "triggered"):
        raise KexecLuError("live update %s: %s" % (report["state"], report.get("error")))


def main(argv=None):
    # The kexec-tools spellings (kexec-lu -l IMAGE, --load-live-update IMAGE,
    # --exec-live-update, -S, ...) go to kexec_lu.compat, which decides what
    # is one (compat.is_classic): `kexec-lu -l --help` shows the classic
    # help, plain `kexec-lu --help` this group's, which names the classic
    # spellings in one line.
    import sys
    from . import compat
    args = sys.argv[1:] if argv is None else list(argv)
    if compat.is_classic(args, cli.commands):
        compat.main(args)
    cli.epilog = compat.GROUP_HELP_LINE
    run(cli, "kexec-lu", args)
