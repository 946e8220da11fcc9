"""`make bench` measures on a quiet machine: with another simulated host
running (anyone's), it refuses in one line naming it, writes nothing, and
measures only when told to, marking the report."""
import subprocess
import sys

from helpers import REPO, boot_host, stop_host

from bench.__main__ import running_hosts


def test_the_benchmark_refuses_beside_a_running_host(tmp_path, sim_images):
    state = tmp_path / "other"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30)
    try:
        pid = host.toolstack("info")["pid"]
        assert (pid, str(state)) in running_hosts()
        out = tmp_path / "results"
        res = subprocess.run([sys.executable, "-m", "bench", "--hosts", "floor", "--runs", "1",
                              "--no-core", "--out", str(out)], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 1 and res.stdout == "", res
        (line,) = res.stderr.splitlines()
        assert line.startswith("bench: ") and "pid %d in %s" % (pid, state) in line
        assert "--allow-others" in line and not out.exists()
    finally:
        stop_host(state)
    assert all(p != pid for p, _ in running_hosts())
