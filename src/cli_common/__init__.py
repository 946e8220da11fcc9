"""What both command lines share and neither owns: running a click group so
that every failure is one line on stderr and an exit status, the statuses
themselves, and printing results (rich tables on a terminal, plain aligned
text when piped, JSON on request).

Neither side's exceptions are known here: each CLI names the roots of the
errors it prints as one line (`errors=`); each such error carries its own
`exit_status`.
"""
import json
import sys

import click

STATUS_OK = 0
STATUS_FAILED = 1
STATUS_BUSY = 2            # another operation holds the hypervisor; retry later
STATUS_ERROR = 255         # kexec -S returns -1 on error: exit status 255
STATUS_INTERRUPTED = 130


def run(group, prog, errors, argv=None):
    try:
        rv = group.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.UsageError as e:
        hint = " (see %s --help)" % e.ctx.command_path if e.ctx else ""
        click.echo("%s: %s%s" % (prog, e.format_message(), hint), err=True)
        # A command whose exit status carries an answer (kexec -S) says
        # which status means "error".
        sys.exit(getattr(e.ctx.command, "error_status", STATUS_FAILED) if e.ctx else STATUS_FAILED)
    except click.ClickException as e:
        click.echo("%s: %s" % (prog, e.format_message()), err=True)
        sys.exit(STATUS_FAILED)
    except click.Abort:
        click.echo("%s: aborted" % prog, err=True)
        sys.exit(STATUS_INTERRUPTED)
    except errors as e:
        click.echo("%s: %s" % (prog, e), err=True)
        sys.exit(e.exit_status)
    except BrokenPipeError:
        sys.exit(STATUS_FAILED)
    sys.exit(rv or STATUS_OK)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange without NaN (which compares false with both ends,
    so passes them) and infinities."""

    def convert(self, value, param, ctx):
        import math
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail("%r is not a finite number." % value, param, ctx)
        return number


def to_terminal(file=None):
    return (file or sys.stdout).isatty()


def print_json(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def hexa(value):
    return "-" if value is None else "0x%x" % value


def print_table(columns, rows, title=None, file=None):
    """columns: header strings; rows: lists of str.  file: stdout unless given."""
    file = file or sys.stdout
    if to_terminal(file):
        from rich.console import Console
        from rich.table import Table
        table = Table(title=title, title_justify="left")
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*[str(x) for x in r])
        Console(file=file).print(table)
        return
    if title:
        print(title, file=file)
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(str(c))
              for i, c in enumerate(columns)]
    for line in [columns] + list(rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip(), file=file)


def print_fields(pairs, title=None, file=None):
    """A key/value block: [(key, value)].  file: stdout unless given."""
    file = file or sys.stdout
    if to_terminal(file):
        from rich.console import Console
        from rich.table import Table
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for k, v in pairs:
            table.add_row(k, str(v))
        Console(file=file).print(table)
        return
    if title:
        print(title, file=file)
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        print("%s  %s" % ((k + ":").ljust(width + 1), v), file=file)


def state_dir_option(default=None):
    """--state-dir, as both programs take it: which simulated host."""
    return click.option("--state-dir", envvar="HYPERV_SIM_DIR", default=default, metavar="DIR",
                        type=click.Path(file_okay=False),
                        help="The simulated host's directory [$HYPERV_SIM_DIR].")
