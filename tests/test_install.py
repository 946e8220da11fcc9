"""The hypervisor runs the installed code, wherever it is started from.

The hypervisor is a process of its own, started at boot and again by every
live update's exec.  Started as `python -m`, it would import the first
`hyperv_sim` it finds in the working directory (a source tree, or any folder
of that name); PYTHONPATH and friends would do the same.  Booted and
live-updated from inside such a directory, with a PYTHONPATH that tries to
slip code into any interpreter that starts the hypervisor, it must still run
the installed package: once for the install `make install` makes (the venv
running these tests) and once for a plain `pip install .` into a new venv.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO

DECOY_INIT = textwrap.dedent('''\
    import os
    with open(os.environ["DECOY_MARKER"], "a") as f:
        f.write("decoy hyperv_sim package imported\\n")
    raise ImportError("decoy hyperv_sim")
    ''')

# Under PYTHONPATH, imported by every interpreter that honours it; it only
# reports a hypervisor (an interpreter whose command runs hyperv_sim.xen).
PROBE_SITECUSTOMIZE = textwrap.dedent('''\
    import os, sys
    if "hyperv_sim.xen" in " ".join(getattr(sys, "orig_argv", sys.argv)):
        with open(os.environ["DECOY_MARKER"], "a") as f:
            f.write("hypervisor read PYTHONPATH\\n")
    ''')


def _copy_source(dest):
    """The project as a clone has it, without this checkout's build products."""
    skip = shutil.ignore_patterns(".git", ".venv", ".cache", "build", "*.egg-info",
                                  "__pycache__", "*.so", ".pytest_cache", ".hypothesis",
                                  "results", "out")
    shutil.copytree(REPO, dest, ignore=skip)


@pytest.fixture(scope="module")
def pip_installed(tmp_path_factory):
    """A new venv with `pip install .` of the project, as a user does it
    (build isolation: pip fetches setuptools and cffi itself)."""
    d = tmp_path_factory.mktemp("pip-install")
    _copy_source(d / "src-copy")
    subprocess.run([sys.executable, "-m", "venv", str(d / "venv")], check=True)
    bindir = d / "venv" / "bin"
    proc = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q",
                           str(d / "src-copy")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return bindir


@pytest.fixture(params=["make install", "pip install ."])
def bindir(request):
    if request.param == "make install":
        return os.path.dirname(sys.executable)
    return str(request.getfixturevalue("pip_installed"))


@pytest.fixture
def decoy(tmp_path):
    """A working directory with a `hyperv_sim/` of its own, and a PYTHONPATH
    with a probe: both write to the marker if a hypervisor comes near them."""
    cwd = tmp_path / "work"
    (cwd / "hyperv_sim").mkdir(parents=True)
    (cwd / "hyperv_sim" / "__init__.py").write_text(DECOY_INIT)
    (cwd / "hyperv_sim" / "xen.py").write_text("raise SystemExit('decoy hypervisor')\n")
    pypath = tmp_path / "pythonpath"
    pypath.mkdir()
    (pypath / "sitecustomize.py").write_text(PROBE_SITECUSTOMIZE)
    return cwd, pypath, tmp_path / "marker"


def test_boot_and_live_update_ignore_the_working_directory(bindir, decoy, tmp_path):
    cwd, pypath, marker = decoy
    state = tmp_path / "host"
    env = dict(os.environ, HYPERV_SIM_DIR=str(state), DECOY_MARKER=str(marker))
    env.pop("PYTHONPATH", None)

    def run(prog, *args, extra_env=None):
        proc = subprocess.run([os.path.join(bindir, prog)] + [str(a) for a in args],
                              cwd=str(cwd), env=dict(env, **(extra_env or {})),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (prog, args, proc.stdout, proc.stderr)
        return proc.stdout

    run("hyperv-sim", "mkimage", "--xen-version", "4.18", "-o", tmp_path / "xen-4.18.gz")
    run("hyperv-sim", "mkimage", "--xen-version", "4.19", "-o", tmp_path / "xen-4.19.gz")
    try:
        # The hypervisor is started by the CLI; the CLI's own interpreter
        # may honour PYTHONPATH (the user's choice), the hypervisor must not.
        hv_env = {"PYTHONPATH": str(pypath)}
        run("hyperv-sim", "boot", "--memory", "1G", "--cmdline", "liveupdate=64M dom0_mem=128M",
            tmp_path / "xen-4.18.gz", extra_env=hv_env)
        pid = int((state / "xen.pid").read_text())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
        assert argv[1:4] == [b"-I", b"-m", b"hyperv_sim.xen"], argv
        run("hyperv-sim", "create", "--type", "pvh", "--memory", "64M", "guest1")
        run("kexec-lu", "load", "--type", "liveupdate", tmp_path / "xen-4.19.gz")
        out = run("kexec-lu", "exec", extra_env=hv_env)
        assert "complete: Xen 4.18.0 -> 4.19.0" in out, out
        run("hyperv-sim", "verify")
    finally:
        subprocess.run([os.path.join(bindir, "hyperv-sim"), "shutdown"], env=env,
                       capture_output=True, timeout=60)
    assert not marker.exists(), marker.read_text()
