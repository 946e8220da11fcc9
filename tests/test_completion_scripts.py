"""The static completion scripts: what the programs' options are today,
and installed where bash, zsh and fish look."""
import pathlib
import subprocess
import sys

from helpers import REPO

INSTALLED = {"bash": "share/bash-completion/completions/%s", "zsh": "share/zsh/site-functions/_%s",
             "fish": "share/fish/vendor_completions.d/%s.fish"}


def test_the_checked_in_scripts_are_what_the_options_say(tmp_path):
    subprocess.run([sys.executable, str(REPO / "tools" / "gen_completion.py"), str(tmp_path)],
                   check=True, capture_output=True)
    made = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    kept = {p.relative_to(REPO / "completion"): p.read_text()
            for p in (REPO / "completion").rglob("*") if p.is_file()}
    assert made.keys() == kept.keys()
    stale = [str(p) for p in made if made[p] != kept[p]]
    assert not stale, "completion/ is out of date (make completion): %s" % stale


def test_each_script_is_installed_where_its_shell_looks():
    prefix = pathlib.Path(sys.prefix)
    for prog in ("kexec-lu", "hyperv-sim"):
        for shell, where in INSTALLED.items():
            installed = prefix / (where % prog)
            assert installed.is_file(), installed
            src = {"bash": "bash/%s", "zsh": "zsh/_%s", "fish": "fish/%s.fish"}[shell] % prog
            assert installed.read_text() == (REPO / "completion" / src).read_text()
