"""A hypervisor's start-up is inside a live update's blackout (xen#2 is a
new program that imports its modules, then restores the guests): the
modules of the restore path must not pull in the standard library's
heavier ones, each of which costs a millisecond or more before the guests
run again.  What only the toolstack, the devices or the CLI need is
imported where it is used."""
import subprocess
import sys

# Each costs 1-4 ms to import here, and none is needed before the guests run.
HEAVY = ("subprocess", "socket", "json", "re", "signal", "enum", "selectors", "locale", "dataclasses",
         "concurrent.futures", "logging", "shlex", "typing", "click", "rich")


def test_the_restore_path_imports_none_of_the_heavy_modules(tmp_path):
    code = ("import sys, hyperv_sim.xen, hyperv_sim.liveupdate.xen2\n"
            "print(' '.join(m for m in %r if m in sys.modules))" % (HEAVY,))
    res = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         check=True)
    assert res.stdout.split() == [], "imported on the way to the guests: %s" % res.stdout.strip()
