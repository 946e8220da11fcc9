"""Every command and option the CLIs accept is documented in their man page."""
import pathlib

import click
import pytest

from hyperv_sim.cli import cli as hyperv_sim_cli
from kexec_lu.cli import cli as kexec_lu_cli

MAN = pathlib.Path(__file__).resolve().parent.parent / "man"


def _options(group):
    for name, command in group.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts:
                    yield name, opt


@pytest.mark.parametrize("group, page", [(kexec_lu_cli, "kexec-lu.8"), (hyperv_sim_cli, "hyperv-sim.8")])
def test_every_command_and_option_is_in_the_man_page(group, page):
    text = (MAN / page).read_text()
    missing = []
    for name in group.commands:
        if ".It Cm %s" % name not in text:
            missing.append(name)
    for name, opt in _options(group):
        # mdoc spells --foo as "Fl -foo" and -t as "Fl t".
        if "Fl %s" % opt[1:] not in text:
            missing.append("%s %s" % (name, opt))
    assert not missing, "undocumented in %s: %s" % (page, ", ".join(missing))


@pytest.mark.parametrize("page", ["kexec-lu.8", "hyperv-sim.8", "kexec-lu-stream.5"])
def test_man_pages_render(page):
    import shutil
    import subprocess
    man = shutil.which("man")
    assert man, "man(1) is needed to render the pages"
    out = subprocess.run([man, "-l", str(MAN / page)], capture_output=True, text=True,
                         env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "SYNOPSIS" in out.stdout or "DESCRIPTION" in out.stdout
    assert out.stderr.strip() == ""
