"""kexec-lu's subcommands: reading the command line and rendering results.

The subcommand form is the documented one; the work is kexec_lu.actions'
and the printing kexec_lu.render's, which kexec's classic spellings
(kexec_lu.compat) share.  Data flows CLI -> actions -> XenClient (kexec_op)
-> privcmd -> hypervisor.
"""
import click

from cli_common import STATUS_ERROR, FiniteFloatRange, print_json, run, state_dir_option
from xen_public import abi
from xen_public.units import parse_address

from . import __version__, actions, compat, render
from .errors import USER_ERRORS, KexecLuError

TYPE_CHOICE = click.Choice(sorted(abi.KEXEC_TYPES), case_sensitive=False)
def _address(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_address(value, what=param.opts[0])
    except USER_ERRORS as e:
        raise click.BadParameter(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog=compat.GROUP_HELP_LINE)
@click.version_option(__version__, "-v", "--version", prog_name="kexec-lu")
def cli():
    """Load a new Xen hypervisor and live-update the running one into it.

    kexec-lu talks to the hypervisor through privcmd: the simulated host
    named by --state-dir or HYPERV_SIM_DIR (default
    ~/.local/state/hyperv-sim), or Xen's /dev/xen/privcmd in a control
    domain.

    \b
    Typical use:
      kexec-lu load xen-new.gz      (a live-update image, xen#1's command line carried)
      kexec-lu status
      kexec-lu exec                 (live-update into it)
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
    if as_json:
        print_json(img.to_json())
    else:
        render.image_info(img)


# ranges

@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the ranges as JSON.")
@state_dir_option()
def ranges(as_json, state_dir):
    """Show the hypervisor's KEXEC_RANGE_MA_* memory ranges."""
    rows = actions.all_ranges(actions.client(state_dir))
    if as_json:
        print_json(render.ranges_json(rows))
    else:
        render.ranges_table(rows)


# load

@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-t", "--type", "ktype", type=TYPE_CHOICE, default="liveupdate", show_default=True,
              help="kexec image type: liveupdate, default or crash.")
@click.option("--command-line", "command_line", metavar="STRING",
              help="Command line for the new hypervisor (a live update's replaces the running one's).")
@click.option("--append", metavar="STRING", help="Append STRING to the command line.")
@click.option("--reuse-cmdline", is_flag=True,
              help="Start from the running hypervisor's command line (a live update's default).")
@click.option("--mem-min", callback=_address, metavar="ADDR",
              help="Lowest address to load the image at.")
@click.option("--mem-max", callback=_address, metavar="ADDR",
              help="Highest address the image may reach.")
@click.option("--dry-run", is_flag=True, help="Compute and show the plan; load nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@state_dir_option()
def load(image, ktype, command_line, append, reuse_cmdline, mem_min, mem_max, dry_run, as_json,
         state_dir):
    """Load IMAGE (xen.gz or an ELF Xen) for a later exec.

    A live-update image (the default type) goes at the top of the window
    formed by the LU bootmem and the running Xen; its command line is the
    running hypervisor's unless --command-line gives another, and gets
    liveupdate=<size>M@0x<base> naming its own LU bootmem.
    """
    if command_line is not None and reuse_cmdline:
        raise click.UsageError("--command-line and --reuse-cmdline exclude each other")
    if actions.kexec_type(ktype) == abi.KEXEC_TYPE_LIVEUPDATE and command_line is None:
        reuse_cmdline = True
    xc = actions.client(state_dir)
    img, plan = actions.plan_image(xc, image, actions.kexec_type(ktype), command_line, append,
                                   reuse_cmdline, mem_min, mem_max)
    if not dry_run:
        actions.load(xc, plan)
    if as_json:
        print_json(dict(plan.to_json(), loaded=not dry_run, image=img.to_json()))
    else:
        render.plan(plan, loaded=not dry_run)


@cli.command()
@click.option("-t", "--type", "ktype", type=TYPE_CHOICE, default="liveupdate", show_default=True,
              help="Which image to unload.")
@state_dir_option()
def unload(ktype, state_dir):
    """Unload the image of a type (nothing loaded is not an error)."""
    actions.unload(actions.client(state_dir), actions.kexec_type(ktype))


@cli.command()
@click.option("-t", "--type", "ktype", type=TYPE_CHOICE, default="liveupdate", show_default=True,
              help="Which image to ask about.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.pass_context
@state_dir_option()
def status(ctx, ktype, as_json, state_dir):
    """Is an image of a type loaded?  Exit status as kexec -S: 1 if
    loaded, 0 if not, 255 on error."""
    try:
        loaded = actions.is_loaded(actions.client(state_dir), actions.kexec_type(ktype))
    except USER_ERRORS as e:
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
@state_dir_option()
def map_(image, svg_file, width, as_json, state_dir):
    """Draw the host's memory to scale: RAM, Xen, LU bootmem, the window,
    the breadcrumb page and, given an IMAGE, where a live update would put it."""
    import shutil
    from . import memmap
    xc = actions.client(state_dir)
    plan = actions.plan_image(xc, image, abi.KEXEC_TYPE_LIVEUPDATE)[1] if image else None
    m = memmap.collect(xc, plan)
    if svg_file:
        try:
            with open(svg_file, "w") as f:
                f.write(memmap.render_svg(m))
        except OSError as e:
            raise KexecLuError("cannot write %s: %s" % (svg_file, e.strerror))
    if as_json:
        print_json(m.to_json())
        return
    from cli_common import to_terminal
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


def _check(as_json, state_dir):
    result = actions.preflight_check(actions.client(state_dir))
    if as_json:
        print_json(result)
    else:
        render.preflight(result)
    return 0 if result["ready"] else 1


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@state_dir_option()
def check(as_json, state_dir):
    """Run every pre-flight check of a live update, pausing nothing.

    Exit status 0: the update would start; 1: it would be refused, or a
    vCPU waits on something that cannot answer during the quiesce; 2: busy.
    """
    return _check(as_json, state_dir)


@cli.command(name="exec")
@click.option("-t", "--type", "ktype", type=click.Choice(["liveupdate"]), default="liveupdate",
              hidden=True, help="Only a live update can be executed on a running host.")
@click.option("--timeout", default=120.0, show_default=True, type=FiniteFloatRange(1, 3600),
              help="Seconds to wait for the new hypervisor to report.")
@click.option("--dry-run", is_flag=True, help="Run the pre-flight checks only, as `check`.")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
@state_dir_option()
def exec_(ktype, timeout, dry_run, as_json, state_dir):
    """Live-update into the loaded image: quiesce, save, exec, restore.

    Shows each phase as it happens and, once the new hypervisor has restored
    every domain, the blackout (first vCPU paused to last one unpaused).
    """
    if dry_run:
        return _check(as_json, state_dir)
    report = actions.live_update(actions.client(state_dir), timeout,
                                 progress=None if as_json else render.LiveUpdateProgress())
    if as_json:
        print_json(report)
    actions.require_done(report)


def main(argv=None):
    # The kexec-tools spellings (kexec-lu -l IMAGE, --load-live-update IMAGE,
    # --exec-live-update, -S, ...) go to kexec_lu.compat, which decides what
    # is one (compat.is_classic): `kexec-lu -l --help` shows the classic
    # help, plain `kexec-lu --help` this group's, which names the classic
    # spellings in one line.
    import sys
    args = sys.argv[1:] if argv is None else list(argv)
    if compat.is_classic(args, cli.commands):
        compat.main(args)
    run(cli, "kexec-lu", USER_ERRORS, args)
