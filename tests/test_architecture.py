"""The architecture's contracts (.importlinter, run by import-linter over the
installed packages): xen_public imports neither side, cli_common knows no
package of ours, kexec_lu never imports hyperv_sim, hyperv_sim imports
kexec_lu only in its boot loader, the live-update engine imports no command
line, and no package has an import cycle.  Each contract is also shown to
break on a tree that violates it, so that a KEPT means something."""
import os
import subprocess
import textwrap

import pytest

from helpers import REPO, installed_command

CONFIG = REPO / ".importlinter"
CONTRACTS = {
    "public-imports-neither-side": "xen_public (Xen's public interface) imports neither side",
    "cli-common-is-neutral": "cli_common (one-line errors, exit statuses, output) knows neither side",
    "tool-never-imports-simulator": "kexec_lu never imports hyperv_sim",
    "simulator-uses-tool-only-to-boot": "hyperv_sim imports kexec_lu only in its boot loader",
    "engine-imports-no-cli": "the live-update engine imports no command line",
    "no-cycles": "no import cycle between the modules of any package",
}


def lint_imports(cwd, pythonpath=None):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    # The repository's own config, from a neutral directory: what is checked
    # is the installed code, not the checkout.
    return subprocess.run([installed_command("lint-imports"), "--no-cache", str(CONFIG)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def verdicts(output):
    """{contract: 'KEPT' | 'BROKEN'} from lint-imports' summary (the first
    line naming each contract; a broken one is named again in its report)."""
    out = {}
    for line in output.splitlines():
        for key, name in CONTRACTS.items():
            if line.startswith(name) and key not in out:
                out[key] = "BROKEN" if " BROKEN" in line else "KEPT" if " KEPT" in line else line
    return out


def test_the_installed_packages_keep_every_contract(tmp_path):
    proc = lint_imports(tmp_path)
    assert verdicts(proc.stdout) == {k: "KEPT" for k in CONTRACTS}, proc.stdout[-3000:]
    assert proc.returncode == 0
    # The packages checked are the installed ones, not a checkout's.
    import xen_public
    assert "site-packages" in xen_public.__file__


def write_tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


# A tree that keeps every contract; each case below adds one violation.
CLEAN = {
    "xen_public/__init__.py": "",
    "xen_public/abi.py": "",
    "cli_common/__init__.py": "import click\n",
    "kexec_lu/__init__.py": "",
    "kexec_lu/cli.py": "from cli_common import x\nfrom xen_public import abi\nfrom . import compat\n",
    "kexec_lu/compat.py": "from . import actions\n",
    "kexec_lu/actions.py": "from xen_public import abi\n",
    "hyperv_sim/__init__.py": "",
    "hyperv_sim/bootloader.py": "from kexec_lu import actions\n",
    "hyperv_sim/cli.py": "from . import bootloader\nimport cli_common\n",
    "hyperv_sim/liveupdate/__init__.py": "",
    "hyperv_sim/liveupdate/engine.py": "from xen_public import abi\n",
}
# (contracts it breaks, the change): a violation in xen_public also reaches
# whoever imports xen_public (the engine, hyperv_sim) through it.
VIOLATIONS = [
    ({"public-imports-neither-side", "simulator-uses-tool-only-to-boot"},
     {"xen_public/abi.py": "from kexec_lu import actions\n"}),
    ({"public-imports-neither-side", "engine-imports-no-cli"}, {"xen_public/abi.py": "import click\n"}),
    ({"cli-common-is-neutral"}, {"cli_common/__init__.py": "from xen_public import abi\n"}),
    ({"tool-never-imports-simulator"}, {"kexec_lu/actions.py": "def f():\n    import hyperv_sim.cli\n"}),
    ({"simulator-uses-tool-only-to-boot"}, {"hyperv_sim/cli.py": "from kexec_lu import cli\n"}),
    ({"engine-imports-no-cli"}, {"hyperv_sim/liveupdate/engine.py": "from hyperv_sim import cli\n"}),
    ({"engine-imports-no-cli"}, {"hyperv_sim/liveupdate/engine.py": "import cli_common\n"}),
    ({"no-cycles"}, {"kexec_lu/actions.py": "from . import cli\n"}),
]


def test_a_clean_tree_keeps_every_contract(tmp_path):
    write_tree(tmp_path / "tree", CLEAN)
    proc = lint_imports(tmp_path, pythonpath=tmp_path / "tree")
    assert verdicts(proc.stdout) == {k: "KEPT" for k in CONTRACTS}, proc.stdout[-3000:]


@pytest.mark.parametrize("broken,change", VIOLATIONS,
                         ids=["%s: %s" % (list(ch)[0], list(ch.values())[0].strip())
                              for _, ch in VIOLATIONS])
def test_each_contract_breaks_on_its_violation(tmp_path, broken, change):
    write_tree(tmp_path / "tree", dict(CLEAN, **change))
    proc = lint_imports(tmp_path, pythonpath=tmp_path / "tree")
    got = verdicts(proc.stdout)
    assert set(got) == set(CONTRACTS), proc.stdout[-3000:]
    assert {k for k, v in got.items() if v == "BROKEN"} == broken, proc.stdout[-3000:]
    assert proc.returncode == 1

