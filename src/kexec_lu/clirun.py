"""Running a click group so that every failure is one line and a status."""
import sys

import click

from .errors import KexecLuError


def run(group, prog, argv=None):
    try:
        rv = group.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.UsageError as e:
        hint = " (see %s --help)" % e.ctx.command_path if e.ctx else ""
        click.echo("%s: %s%s" % (prog, e.format_message(), hint), err=True)
        # A command whose exit status carries an answer (kexec -S) says
        # which status means "error".
        sys.exit(getattr(e.ctx.command, "error_status", 1) if e.ctx else 1)
    except click.ClickException as e:
        click.echo("%s: %s" % (prog, e.format_message()), err=True)
        sys.exit(1)
    except click.Abort:
        click.echo("%s: aborted" % prog, err=True)
        sys.exit(130)
    except KexecLuError as e:
        click.echo("%s: %s" % (prog, e), err=True)
        sys.exit(e.exit_status)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(rv or 0)
