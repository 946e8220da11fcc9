"""The classic kexec-tools spellings: `kexec-lu -l IMAGE`, `-p`, `-u`, `-e`,
`-S`, `--load-live-update`, `--exec-live-update` and their options, so a
script written for `kexec` runs with `kexec-lu` substituted.

Options are read as kexec-tools 2.0.25's main() reads them: GNU getopt_long
(options and the image in any order, unique prefixes of long options), each
option setting the same do_load / do_unload / do_exec / do_status flags and
image type that it sets in kexec, in order; then the actions run in kexec's
order: status, unload, load, exec.  The work itself is kexec_lu.actions', as
for the subcommands (kexec_lu.cli, which this module does not import); this
module only translates, and renders with kexec_lu.render.

Where kexec-lu differs from kexec, on purpose:

* `-t/--type` names kexec's image *loader* (multiboot2-x86, elf-x86_64,
  elf-x86), not the image type of `kexec-lu load --type`.  kexec-lu always
  boots Xen through its multiboot2 header, so the ELF loaders only add their
  ELF class and machine checks.
* `--module` is refused: kexec-lu's loader hands Xen no multiboot2 modules.
* `-u -p` (and `-u --load-live-update`) with no image only unloads.  kexec
  reads that order as "unload, then load" and fails for want of a kernel;
  `-p -u` and an unload followed by a reload with an image work as in kexec.
* Loading and executing in one step (`kexec IMAGE` with no action) is refused,
  as is `-e` for a default image: that is a reboot, not a live update.
* Every failure of a `-S` invocation, a mistyped option included, exits 255
  (kexec's -1), so that it cannot read as "loaded" (1).
* Extra operands are refused rather than ignored.
"""
import getopt
import sys

import click

from cli_common import STATUS_ERROR
from xen_public import abi
from xen_public.errors import FormatError

from . import __version__, actions, render
from .errors import USER_ERRORS, ImageError, KexecLuError

PROG = "kexec-lu"

SHORT_OPTIONS = "hvdluepSt:xy"
LONG_OPTIONS = [
    "help", "version", "debug", "load", "load-panic", "unload", "exec", "status", "type=",
    "load-live-update", "exec-live-update", "mem-min=", "mem-max=", "no-ifdown", "no-sync",
    # the multiboot2-x86 loader's own options
    "command-line=", "append=", "reuse-cmdline", "module=",
]
LOADER_OPTIONS = ("--command-line", "--append", "--reuse-cmdline", "--module")

# kexec's x86 loaders that can carry Xen: name -> (ELF class, e_machine) it
# insists on, or None for "any x86 ELF".
LOADERS = {
    "multiboot2-x86": None,
    "elf-x86_64": (64, abi.EM_X86_64),
    "elf-x86": (32, abi.EM_386),
}

USAGE = ("usage: kexec-lu -l|-p|--load-live-update [options] IMAGE | -u | -e | "
         "--exec-live-update | -S; kexec-lu -l --help lists the options")
SEE_HELP = "see kexec-lu -l --help"

# One line for the subcommand help (`kexec-lu --help`).
GROUP_HELP_LINE = ("The kexec-tools spellings work too (kexec-lu --load-live-update IMAGE, "
                   "--exec-live-update, -l, -p, -u, -e, -S, ...): kexec-lu -l --help lists them.")

HELP = """\
Usage: kexec-lu [options] [IMAGE]

The kexec-tools 2.0.25 spellings of kexec-lu; the subcommands (kexec-lu
--help) are the documented interface and do the same work.

Actions (the last of -l, -p, --load-live-update, -u, -e, --exec-live-update
decides, as in kexec):
  -l, --load              Load IMAGE as the default (reboot) image.
  -p, --load-panic        Load IMAGE as the crash image.
      --load-live-update  Load IMAGE as the live-update image
                          (= kexec-lu load --type liveupdate IMAGE).
  -u, --unload            Unload the default image; with -p the crash image,
                          with --load-live-update the live-update image.
  -e, --exec              Execute the default image: a reboot, which
                          kexec-lu does not do (use --exec-live-update).
      --exec-live-update  Live-update into the loaded image
                          (= kexec-lu exec).
  -S, --status            Exit 1 if an image is loaded, 0 if not, 255 on
                          error; prints nothing.  Asks about the crash image
                          unless -l (default) or --load-live-update is given.

Options:
  -t, --type=LOADER       The image loader: multiboot2-x86 (what kexec-lu
                          uses anyway), elf-x86_64 or elf-x86 (IMAGE must
                          also be an ELF64 x86-64 / ELF32 i386 file).
      --command-line=STRING
      --append=STRING     The new hypervisor's command line (the last of the
                          two wins, as in kexec's multiboot2 loader).
      --reuse-cmdline     Start from the running hypervisor's command line;
                          --command-line/--append are appended to it.
      --module=FILE       Refused: kexec-lu loads no multiboot2 modules.
      --mem-min=ADDR      Lowest address to load IMAGE at.
      --mem-max=ADDR      Highest address IMAGE may reach.
  -x, --no-ifdown         Accepted: kexec-lu never takes network interfaces
                          down (kexec does before -e/--exec-live-update).
  -y, --no-sync           Accepted: kexec-lu never syncs file systems.
  -d, --debug             Print the load plan and progress on stderr.
  -v, --version           Print the version and exit.
  -h, --help              Print this help and exit.

kexec-lu prints nothing on success, as kexec does; errors are one line on
stderr.
"""


class Usage(KexecLuError):
    """A mistake in the options themselves; `hint` follows the message."""

    def __init__(self, message, hint=SEE_HELP):
        super().__init__(message)
        self.hint = hint


class Request:
    """What the options asked for, as kexec's main() keeps it."""

    def __init__(self):
        # kexec's initial values: no action given means load and reboot.
        self.do_load = True
        self.do_shutdown = True
        self.do_exec = False
        self.do_unload = False
        self.do_status = False
        self.has_opt_load = False
        self.ktype = None               # kexec_flags: None = 0 (default image)
        self.loader = None              # -t
        self.command_line = None        # --command-line / --append, the last one
        self.reuse_cmdline = False
        self.modules = []
        self.mem_min = None
        self.mem_max = None
        self.debug = False
        self.loader_options = []        # which multiboot2-loader options were given
        self.operands = []
        self.show = None                # "help" or "version": print and stop

    @property
    def kexec_type(self):
        """KEXEC_TYPE_*: kexec_flags 0 means the default image."""
        return abi.KEXEC_TYPE_DEFAULT if self.ktype is None else self.ktype

    @property
    def type_name(self):
        return abi.KEXEC_TYPE_NAMES[self.kexec_type]


GROUP_OPTIONS = ("-h", "--help", "-v", "--version")
ACTIONS = ("-l", "--load", "-p", "--load-panic", "--load-live-update", "-u", "--unload",
           "-e", "--exec", "--exec-live-update", "-S", "--status")


def is_classic(args, commands):
    """Whether a kexec-lu command line is in the classic spelling rather
    than the subcommand one: it starts with an option that is not the
    group's own (-h/--help, -v/--version alone stay the group's), or, since
    GNU getopt lets the image come first (`kexec-lu xen.gz -l`), its first
    word is no subcommand and a classic action follows, or names a file
    (`kexec-lu xen.gz`, kexec's load-and-reboot, which compat refuses
    saying so) rather than a mistyped subcommand."""
    leading = []
    for a in args:
        if not a.startswith("-"):
            break
        leading.append(a)
    if any(a not in GROUP_OPTIONS for a in leading):
        return True
    if leading or not args or args[0] in commands:
        return False
    try:
        opts, _ = getopt.gnu_getopt(list(args), SHORT_OPTIONS, LONG_OPTIONS)
    except getopt.GetoptError:
        return False                # a mistyped subcommand: let the group say so
    import os
    return any(opt in ACTIONS for opt, _ in opts) or "/" in args[0] or os.path.exists(args[0])


def _address(opt, value):
    from xen_public.units import parse_address
    try:
        return parse_address(value, what=opt)
    except FormatError as e:
        raise Usage(str(e))


def parse(argv):
    """argv (without the program name) -> Request; raises Usage."""
    try:
        opts, operands = getopt.gnu_getopt(list(argv), SHORT_OPTIONS, LONG_OPTIONS)
    except getopt.GetoptError as e:
        raise Usage(e.msg, hint=USAGE)
    r = Request()
    r.operands = operands
    for opt, arg in opts:
        if opt in ("-h", "--help"):
            r.show = "help"         # kexec: usage() and return at once
            return r
        if opt in ("-v", "--version"):
            r.show = "version"
            return r
        if opt in ("-d", "--debug"):
            r.debug = True
        elif opt in ("-x", "--no-ifdown", "-y", "--no-sync"):
            pass        # nothing of this machine is touched anyway
        elif opt in ("-l", "--load"):
            r.has_opt_load = True
            r.do_load, r.do_exec, r.do_shutdown = True, False, False
        elif opt in ("-p", "--load-panic"):
            r.do_load, r.do_exec, r.do_shutdown = True, False, False
            r.ktype = abi.KEXEC_TYPE_CRASH
        elif opt == "--load-live-update":
            r.do_load, r.do_exec, r.do_shutdown = True, False, False
            r.ktype = abi.KEXEC_TYPE_LIVEUPDATE
        elif opt in ("-u", "--unload"):
            r.do_load, r.do_shutdown, r.do_unload = False, False, True
        elif opt in ("-e", "--exec", "--exec-live-update"):
            if opt == "--exec-live-update":
                r.ktype = abi.KEXEC_TYPE_LIVEUPDATE
            r.do_load, r.do_shutdown, r.do_exec = False, False, True
        elif opt in ("-S", "--status"):
            r.do_status = True
        elif opt in ("-t", "--type"):
            r.loader = arg
        elif opt == "--mem-min":
            r.mem_min = _address(opt, arg)
        elif opt == "--mem-max":
            r.mem_max = _address(opt, arg)
        elif opt in ("--command-line", "--append"):
            r.command_line = arg
        elif opt == "--reuse-cmdline":
            r.reuse_cmdline = True
        elif opt == "--module":
            r.modules.append(arg)
        if opt in LOADER_OPTIONS and opt not in r.loader_options:
            r.loader_options.append(opt)

    if r.do_status:
        # kexec: -S asks about the crash image unless told otherwise, and
        # does nothing else.
        if r.ktype is None and not r.has_opt_load:
            r.ktype = abi.KEXEC_TYPE_CRASH
        r.do_load = r.do_unload = r.do_exec = r.do_shutdown = False
    if r.do_unload and r.do_load and not r.operands:
        r.do_load = False           # `-u -p`: unload only (see the module doc)
    if r.do_load and r.do_shutdown:
        raise Usage("no action given: -l, -p or --load-live-update load IMAGE, -u unloads, "
                    "--exec-live-update live-updates, -S asks (loading and rebooting in one "
                    "step is not supported)")
    if not r.do_load and r.loader_options:
        # kexec's "bogus options" check: loader options only mean something to a load.
        raise Usage("option %s only applies when loading (-l, -p or --load-live-update)"
                    % r.loader_options[0])
    if r.do_load:
        if not r.operands:
            raise Usage("no image given: which file should %s load?"
                        % {None: "-l", abi.KEXEC_TYPE_CRASH: "-p",
                           abi.KEXEC_TYPE_LIVEUPDATE: "--load-live-update"}[r.ktype])
        if len(r.operands) > 1:
            raise Usage("more than one image given (%s)" % ", ".join(r.operands))
        if r.loader is not None and r.loader not in LOADERS:
            raise Usage("-t %s: not an image loader kexec-lu has; it loads Xen with %s"
                        % (r.loader, ", ".join(LOADERS)))
    elif r.operands:
        raise Usage("unexpected argument %r: only a load (-l, -p, --load-live-update) "
                    "takes an image" % r.operands[0])
    return r


def asks_status(argv):
    """Whether argv is a -S invocation, for options too broken to parse."""
    for tok in argv:
        if tok == "--":
            break
        if tok.startswith("--"):
            name = tok[2:].split("=", 1)[0]
            if name and "status".startswith(name):
                return True
        elif tok.startswith("-"):
            for c in tok[1:]:
                if c == "S":
                    return True
                if c == "t":
                    break           # the rest is -t's argument
    return False


# ---------------------------------------------------------------- actions

def _debug(r, fmt, *args):
    if r.debug:
        click.echo("kexec-lu: " + (fmt % args if args else fmt), err=True)


def check_loader(loader, path):
    """What kexec's loader `loader` would insist on, before kexec-lu's own
    multiboot2 load runs."""
    if loader is None or LOADERS[loader] is None:
        return                      # multiboot2-x86: plan_load checks the header
    from .image import load_image, machine_name
    img = load_image(path)
    elf_class, e_machine = LOADERS[loader]
    if (img.elf_class, img.e_machine) != (elf_class, e_machine):
        raise ImageError("%s: -t %s needs an ELF%d %s image, this is ELF%d %s"
                         % (img.path, loader, elf_class, machine_name(e_machine),
                            img.elf_class, img.machine))
    if img.mb2 is None:
        raise ImageError("%s: -t %s: an ELF%d %s image as that loader needs, but %s: kexec-lu "
                         "boots Xen only through its multiboot2 header (load xen.gz, not xen-syms)"
                         % (img.path, loader, elf_class, machine_name(e_machine), img.mb2_missing))


def do_status(r):
    loaded = actions.is_loaded(actions.client(), r.kexec_type)
    _debug(r, "%s image %s", r.type_name, "loaded" if loaded else "not loaded")
    return 1 if loaded else 0


def do_unload(r):
    actions.unload(actions.client(), r.kexec_type)
    _debug(r, "%s image unloaded", r.type_name)


def do_load(r):
    check_loader(r.loader, r.operands[0])
    # kexec's multiboot2 loader: --command-line and --append both set the
    # line (the last wins) and --reuse-cmdline puts the running system's in
    # front of it.  Without --reuse-cmdline that is `load --command-line S`,
    # with it `load --reuse-cmdline --append S`: compose_cmdline then drops
    # a stale liveupdate= (or crashkernel=) just as it does there.  kexec
    # also puts the image's file name first (multiboot's convention);
    # kexec-lu load does not, and neither do we, so that both spellings load
    # the very same bytes.
    xc = actions.client()
    _, plan = actions.plan_image(xc, r.operands[0], r.kexec_type,
                                 command_line=None if r.reuse_cmdline else r.command_line,
                                 append=r.command_line if r.reuse_cmdline else None,
                                 reuse_cmdline=r.reuse_cmdline, mem_min=r.mem_min, mem_max=r.mem_max)
    actions.load(xc, plan)
    if r.debug:                     # kexec prints nothing; with -d the plan, on stderr
        render.plan(plan, loaded=True, file=sys.stderr)


def do_exec(r):
    xc = actions.client()
    if r.ktype == abi.KEXEC_TYPE_LIVEUPDATE:
        progress = render.LiveUpdateProgress(file=sys.stderr) if r.debug else None
        actions.require_done(actions.live_update(xc, 120.0, progress=progress))
    else:
        actions.execute(xc, r.kexec_type)


def run(r):
    """Carry out a parsed request, in kexec's order; returns the exit status."""
    if r.show == "help":
        click.echo(HELP, nl=False)
        return 0
    if r.show == "version":
        click.echo("kexec-lu, version %s" % __version__)   # as `kexec-lu --version`
        return 0
    if r.do_load and r.modules:
        raise KexecLuError("--module: multiboot2 modules are not supported by kexec-lu "
                           "(a hypervisor image needs none for live update)")
    if r.do_status:
        return do_status(r)
    if r.do_unload:
        do_unload(r)
    if r.do_load:
        do_load(r)
    if r.do_exec:
        do_exec(r)
    return 0


def main(argv):
    """Run the classic spellings; never returns (sys.exit)."""
    status_call = asks_status(argv)
    try:
        r = parse(argv)
        status_call = r.do_status and r.show is None
        rv = run(r)
    except Usage as e:
        click.echo("%s: %s (%s)" % (PROG, e, e.hint), err=True)
        sys.exit(STATUS_ERROR if status_call else 1)
    except USER_ERRORS as e:
        click.echo("%s: %s" % (PROG, e), err=True)
        sys.exit(STATUS_ERROR if status_call else e.exit_status)
    except click.ClickException as e:
        click.echo("%s: %s" % (PROG, e.format_message()), err=True)
        sys.exit(STATUS_ERROR if status_call else 1)
    except click.Abort:
        click.echo("%s: aborted" % PROG, err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(rv)
