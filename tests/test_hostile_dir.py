"""A state directory someone else prepared (issue 12, rule 5): the clients
trust no directory, socket or server they did not check, and nothing in
the directory is opened through a symlink.  The attacker is a second uid
(nobody) where the tests run as root, as on a shared machine."""
import fcntl
import os
import subprocess
import sys
import threading

import pytest

from helpers import CliResult, installed_command, one_line_error, run_cli, stop_host

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="a second uid needs root (CI runs as root)")

# A fake hypervisor: answers every toolstack request "all is well" (a verify
# that holds, a halted host whose facts point at a root-only file).
FAKE = r"""
import json, os, socket, struct, sys
path, uid = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o666)
if uid >= 0:        # before listen(): SO_PEERCRED reports who listened
    os.setgid(uid); os.setuid(uid)
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    head = c.recv(4, socket.MSG_WAITALL)
    (n,) = struct.unpack("<I", head)
    body = c.recv(n, socket.MSG_WAITALL)
    req = json.loads(body[1:])
    result = {"ping": {"pid": 1, "halted": "fake"},
              "verify": {"ok": True, "domains": [], "problems": []},
              "halted-info": {"ram": "/etc/shadow-target", "lu_start": 0, "lu_size": 1 << 26,
                              "xen_start": 1 << 26, "xen_size": 1 << 21, "cmdline": "x",
                              "reason": "fake"}}.get(req["op"])
    out = json.dumps({"ok": True, "result": result}).encode()
    c.sendall(struct.pack("<I", len(out) + 1) + b"T" + out)
    c.close()
"""


def serve_fake(state, uid):
    proc = subprocess.Popen([sys.executable, "-c", FAKE, str(state / "privcmd"), str(uid)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_directory_writable_by_others_is_not_trusted(tmp_path):
    state = tmp_path / "host"
    state.mkdir()
    os.chmod(state, 0o777)
    fake = serve_fake(state, -1)
    try:
        for prog, args in (("hyperv-sim", ["verify"]), ("kexec-lu", ["ranges"])):
            res = run_cli(prog, *args, state_dir=state)
            assert "all checks hold" not in res.stdout
            one_line_error(res, prog, "writable by others", "refusing to trust it")
    finally:
        fake.kill()
        fake.wait()


@as_root
def test_a_directory_of_another_user_is_not_trusted_and_recover_writes_nothing(tmp_path):
    os.chmod(tmp_path, 0o755)
    state = tmp_path / "host"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    target = tmp_path / "root-only"
    target.write_bytes(b"root's data\n")
    os.chmod(target, 0o600)
    fake = serve_fake(state, NOBODY)
    try:
        res = run_cli("hyperv-sim", "verify", state_dir=state)
        one_line_error(res, "hyperv-sim", "belongs to uid %d" % NOBODY)
        res = run_cli("hyperv-sim", "recover", "--image", "/dev/null", state_dir=state)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res
        assert target.read_bytes() == b"root's data\n"
        assert not (state / "xen.pid").exists()
    finally:
        fake.kill()
        fake.wait()


@as_root
def test_a_server_running_as_another_user_is_not_trusted(tmp_path):
    state = tmp_path / "host"
    state.mkdir(mode=0o700)
    fake = serve_fake(state, NOBODY)     # bound by root, answering as nobody
    try:
        res = run_cli("hyperv-sim", "verify", state_dir=state)
        assert "all checks hold" not in res.stdout
        one_line_error(res, "hyperv-sim", "runs as uid %d" % NOBODY, "refusing to trust it")
    finally:
        fake.kill()
        fake.wait()


@pytest.mark.parametrize("name", ["xen.stderr", "console.log", "xen.pid"])
def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path, sim_images, name):
    state = tmp_path / "host"
    state.mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (state / name).symlink_to(target)
    res = run_cli("hyperv-sim", "boot", "--memory", "512M", "--cmdline", "liveupdate=64M dom0_mem=128M",
                  str(sim_images["4.18"]), state_dir=state)
    if res.returncode == 0:
        (state / name).unlink()
        stop_host(state)
    one_line_error(res, "hyperv-sim", "symlink")
    assert target.read_text() == "keep me\n"
    assert not (state / "ram").exists()


def test_one_boot_at_a_time_per_directory(tmp_path, sim_images):
    state = tmp_path / "host"
    state.mkdir(mode=0o700)
    args = ["boot", "--memory", "512M", "--cmdline", "liveupdate=64M dom0_mem=128M", str(sim_images["4.18"])]
    with open(state / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        one_line_error(run_cli("hyperv-sim", *args, state_dir=state), "hyperv-sim",
                       "another boot or recover is under way")
    assert not (state / "ram").exists()
    results = []
    threads = [threading.Thread(target=lambda: results.append(run_cli("hyperv-sim", *args, state_dir=state)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(r.returncode for r in results) == [0, 1], results
        loser = next(r for r in results if r.returncode)
        one_line_error(loser, "hyperv-sim")
        assert run_cli("hyperv-sim", "list", state_dir=state).returncode == 0
    finally:
        stop_host(state)


def test_boot_failures_at_the_filesystem_are_one_line_and_leave_no_ram(tmp_path, sim_images):
    image = str(sim_images["4.18"])
    args = ["boot", "--memory", "2G", "--cmdline", "liveupdate=64M dom0_mem=128M", image]
    dangling = tmp_path / "dangling"
    dangling.mkdir(mode=0o700)
    (dangling / "ram").symlink_to(tmp_path / "nowhere")
    one_line_error(run_cli("hyperv-sim", *args, state_dir=dangling), "hyperv-sim", "is a symlink")
    assert not (tmp_path / "nowhere").exists()
    # No address space for 2 GiB of RAM: the mapping fails, in one line.
    small = tmp_path / "small-vm"
    cmd = "ulimit -v 400000; exec \"$0\" \"$@\""
    proc = subprocess.run(["sh", "-c", cmd, installed_command("hyperv-sim")] + args + ["--state-dir", str(small)],
                          capture_output=True, text=True, timeout=60)
    one_line_error(CliResult(proc), "hyperv-sim", "cannot make", "host RAM")
    assert not (small / "ram").exists()
    # A missing parent is created; a path through a file is one line.
    (tmp_path / "afile").write_text("")
    one_line_error(run_cli("hyperv-sim", *args, state_dir=tmp_path / "afile" / "h"), "hyperv-sim",
                   "cannot create state directory")
