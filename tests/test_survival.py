"""Failures from outside the project (issue 12): the host outlives every
one of them, and the RAM file is the truth.

- Connection floods, descriptor and address-space exhaustion: refused and
  counted, never a power-off.
- A signal stops the hypervisor as a crash stops a machine: RAM stays, and
  `boot` will not replace it without --discard (naming `recover` when an
  update is pending in it).
- xen#2 killed with SIGKILL at every phase after the point of no return, and
  recover itself interrupted: `hyperv-sim recover` finishes from RAM alone,
  nothing lost.  `kexec-lu exec` says the hypervisor died, not a timeout.
- xen#2 stopped in the deferred part of its rebuild, after the guests run
  again: continued, it finishes with nothing lost; killed, it is a crashed
  hypervisor, and recover will not replay a stream the guests outran.
"""
import os
import resource
import signal
import socket
import subprocess
import time

import pytest

from hyperv_sim.faultpoints import FAULTS_AFTER_PONR
from xen_public import abi

from helpers import assert_restored_whole, boot_host, breadcrumb_magic, domains_by_name, \
    full_state, installed_command, one_line_error, run_cli, stop_host, wait_for, wait_steps

GUESTS = [dict(name="pv", type="pv", memory=64 << 20, vcpus=2),
          dict(name="hvm", type="hvm", memory=64 << 20, vcpus=1, pci=["0000:03:00.0"]),
          dict(name="pvh", type="pvh", memory=64 << 20, vcpus=1, event_channel_abi="fifo",
               grant_version=2)]


@pytest.fixture
def guests_host(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30, cmdline="liveupdate=64M dom0_mem=128M")
    for g in GUESTS:
        host.toolstack("create", **g)
    wait_steps(host)
    yield host
    stop_host(state)


def hypervisor_pid(host):
    return int((host.state_dir / "xen.pid").read_text())


def flood(path, n, patience=5.0):
    """n idle connections to the privcmd socket.  A full listen backlog
    (EAGAIN: the server has not accepted the earlier ones yet, as on a busy
    machine) is waited out for up to `patience` seconds; any other refusal
    ends the flood with the connections made so far."""
    socks = []
    deadline = time.monotonic() + patience
    while len(socks) < n:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
            continue
        except OSError:
            s.close()
            break
        socks.append(s)
    return socks


def assert_alive_and_whole(host, before):
    wait_for(lambda: host.hyperv_sim("list").returncode == 0, "the host to answer again", timeout=30)
    assert (host.state_dir / "ram").exists()
    assert_restored_whole(before, full_state(host))
    assert host.toolstack("verify")["ok"]


def test_a_descriptor_flood_is_refused_and_the_host_carries_on(guests_host):
    host = guests_host
    before = full_state(host)
    pid = hypervisor_pid(host)
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (40, old[1]))
    socks = flood(host.state_dir / "privcmd", 200)
    try:
        wait_for(lambda: "cannot accept a connection" in (host.state_dir / "console.log").read_text(),
                 "accept() to fail with EMFILE")
        assert not host.state_dir.joinpath("privcmd").exists() or os.kill(pid, 0) is None
    finally:
        for s in socks:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    assert_alive_and_whole(host, before)
    assert hypervisor_pid(host) == pid


def test_beyond_the_connection_limit_clients_are_told_busy(guests_host):
    from hyperv_sim.privcmd import MAX_CONNECTIONS
    host = guests_host
    before = full_state(host)
    socks = flood(host.state_dir / "privcmd", MAX_CONNECTIONS)
    try:
        wait_for(lambda: host.hyperv_sim("list").returncode == 2, "a client to be turned away")
        res = host.hyperv_sim("list")
        one_line_error(res, "hyperv-sim", "busy", "retry", status=2)
    finally:
        for s in socks:
            s.close()
    assert_alive_and_whole(host, before)


def test_no_threads_left_is_refused_and_the_host_carries_on(guests_host):
    host = guests_host
    before = full_state(host)
    pid = hypervisor_pid(host)
    with open("/proc/%d/status" % pid) as f:
        vm = dict(l.split(":", 1) for l in f)["VmSize"].split()[0]
    old = resource.prlimit(pid, resource.RLIMIT_AS)
    # Room for a few more 8 MiB thread stacks, not for 60.
    resource.prlimit(pid, resource.RLIMIT_AS, (int(vm) * 1024 + (48 << 20), old[1]))
    socks = flood(host.state_dir / "privcmd", 60)
    try:
        wait_for(lambda: "can't start new thread" in (host.state_dir / "console.log").read_text(),
                 "a thread start to fail")
    finally:
        for s in socks:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_AS, old)
    assert_alive_and_whole(host, before)


def test_an_oversized_request_is_refused_not_held(guests_host):
    from xen_public import privcmd as wire
    host = guests_host
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(host.state_dir / "privcmd"))
    s.sendall(wire._LEN.pack(wire.MAX_FRAME + 1) + b"T")
    try:
        reply = s.recv(16)          # dropped at the header: no answer, no 512 MiB held
    except ConnectionResetError:
        reply = b""
    s.close()
    assert reply == b""
    assert "frame length %d out of range" % (wire.MAX_FRAME + 1) in \
        (host.state_dir / "console.log").read_text()
    assert host.hyperv_sim("list").returncode == 0


def test_a_signal_keeps_ram_and_boot_will_not_replace_it(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=512 << 20, cmdline="liveupdate=64M dom0_mem=128M")
    try:
        pid = hypervisor_pid(host)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not (state / "xen.pid").exists(), "the hypervisor to stop")
        assert (state / "ram").stat().st_size == 512 << 20
        assert "stopped by signal 15 without a power-off" in (state / "console.log").read_text()
        image = sim_images["4.18"]
        res = run_cli("hyperv-sim", "boot", "--memory", "512M", str(image), state_dir=state)
        one_line_error(res, "hyperv-sim", "stopped without powering off", "--discard")
        assert (state / "ram").stat().st_size == 512 << 20
        res = run_cli("hyperv-sim", "boot", "--discard", "--memory", "512M", "--cmdline", "liveupdate=64M dom0_mem=128M", str(image), state_dir=state)
        assert res.returncode == 0, res
        assert run_cli("hyperv-sim", "shutdown", state_dir=state).returncode == 0
        assert not (state / "ram").exists()         # shutdown, and only shutdown, drops RAM
    finally:
        stop_host(state)


def kill_at(host, image, point):
    """A live update whose xen#2 is killed with SIGKILL at `point` (it stops
    itself there: lu_stop), while `kexec-lu exec` follows it.
    -> (before, whole state, what exec printed on stderr)."""
    host.load_lu(image, "--append", "lu_stop=" + point)
    before, whole = domains_by_name(host), full_state(host)
    pid = hypervisor_pid(host)
    console = host.state_dir / "console.log"
    proc = subprocess.Popen([installed_command("kexec-lu"), "exec", "--timeout", "100"],
                            env=dict(os.environ, HYPERV_SIM_DIR=str(host.state_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: "lu_stop=%s: stopped" % point in console.read_text(), "xen#2 to stop at " + point)
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=100)
    assert proc.returncode == 1, err
    return before, whole, err


@pytest.mark.parametrize("point", FAULTS_AFTER_PONR)
def test_xen2_killed_at_every_phase_is_recovered_from_ram_alone(guests_host, sim_images, point):
    host = guests_host
    lu_start = host.toolstack("info")["lu_bootmem"]["start"]
    pid = hypervisor_pid(host)
    before, whole, err = kill_at(host, sim_images["4.19"], point)
    # exec noticed the death (it did not wait out its 100 s) and says what to do.
    assert "the hypervisor (pid %d) died during the live update" % pid in err
    assert "hyperv-sim recover --image" in err
    assert breadcrumb_magic(host, lu_start) == abi.LU_BREADCRUMB_MAGIC
    # A plain boot would destroy the guests: refused, naming recover.
    res = host.hyperv_sim("boot", "--memory", "1G", str(sim_images["4.18"]))
    one_line_error(res, "hyperv-sim", "recover --image", "--discard")
    res = host.hyperv_sim("recover", "--image", str(sim_images["4.18"]))
    assert res.returncode == 0, res
    assert "recovered with Xen 4.18" in res.stdout
    assert_restored_whole(whole, full_state(host))
    wait_steps(host, since=before)
    assert host.toolstack("verify")["ok"]
    assert breadcrumb_magic(host) == 0
    # Done: nothing is pending any more.
    one_line_error(host.hyperv_sim("recover", "--image", str(sim_images["4.18"])), "hyperv-sim",
                   "running, not halted")


def test_with_no_breadcrumb_there_is_nothing_to_recover(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=512 << 20, cmdline="liveupdate=64M dom0_mem=128M")
    try:
        os.kill(hypervisor_pid(host), signal.SIGKILL)
        wait_for(lambda: host.hyperv_sim("list").returncode == 1, "the hypervisor to be gone")
        one_line_error(host.hyperv_sim("recover", "--image", str(sim_images["4.18"])), "hyperv-sim",
                       "nothing to recover", "no breadcrumb")
        # The boot refusal does not name recover: there is nothing it could do.
        line = one_line_error(host.hyperv_sim("boot", "--memory", "512M", str(sim_images["4.18"])),
                              "hyperv-sim", "--discard")
        assert "recover" not in line
    finally:
        stop_host(state)


def stop_in_deferred_rebuild(host, image):
    """A live update whose xen#2 stops itself halfway through rebuilding
    the free frames' entries, after the guests run again
    (lu_stop=frametable-deferred); -> (the exec process, xen#2's pid)."""
    host.load_lu(image, "--append", "lu_stop=frametable-deferred")
    proc = subprocess.Popen([installed_command("kexec-lu"), "exec", "--timeout", "100"],
                            env=dict(os.environ, HYPERV_SIM_DIR=str(host.state_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: "lu_stop=frametable-deferred: stopped" in (host.state_dir / "console.log").read_text(),
             "xen#2 to stop in the deferred rebuild")
    return proc, hypervisor_pid(host)


def test_xen2_stopped_in_the_deferred_rebuild_finishes_it_and_loses_nothing(guests_host, sim_images):
    host = guests_host
    lu_start = host.toolstack("info")["lu_bootmem"]["start"]
    free = host.toolstack("info")["free_memory"]
    before, whole = domains_by_name(host), full_state(host)
    proc, pid = stop_in_deferred_rebuild(host, sim_images["4.19"])
    # The commit is behind it: the guests ran, so no breadcrumb may offer
    # their stream for a replay.
    assert breadcrumb_magic(host, lu_start) == 0
    # No one can ask for memory yet: the socket is not up, clients retry.
    one_line_error(run_cli("hyperv-sim", "create", "--type", "hvm", "--memory", "16M", "late",
                           state_dir=host.state_dir), "hyperv-sim", "does not answer yet", "retry", status=2)
    os.kill(pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    rep = host.toolstack("lu-report")
    assert rep["state"] == "complete"
    names = [p["name"] for p in rep["phases"]]
    assert names.index("unpause") < names.index("frametable-deferred") < names.index("scrub")
    assert_restored_whole(whole, full_state(host))
    wait_steps(host, since=before)
    assert host.toolstack("verify")["ok"]
    # Every free frame came back to the allocator, rebuilt: as much free
    # memory as before the update, and the table agrees frame for frame.
    info = host.toolstack("info")
    assert info["free_memory"] == free
    assert info["frames"]["free"] * 4096 == free


def test_xen2_killed_in_the_deferred_rebuild_is_a_crash_not_a_pending_update(guests_host, sim_images):
    """After the commit the guests ran: a killed xen#2 is a crashed
    hypervisor (RAM kept, boot refuses to discard it), and recover refuses
    rather than roll the guests back to their stream."""
    host = guests_host
    proc, pid = stop_in_deferred_rebuild(host, sim_images["4.19"])
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=100)
    assert proc.returncode == 1 and "the hypervisor (pid %d) died" % pid in err, err
    one_line_error(host.hyperv_sim("recover", "--image", str(sim_images["4.18"])), "hyperv-sim",
                   "nothing to recover", "no breadcrumb")
    line = one_line_error(host.hyperv_sim("boot", "--memory", "1G", str(sim_images["4.18"])),
                          "hyperv-sim", "--discard")
    assert "recover" not in line
    assert (host.state_dir / "ram").stat().st_size == 1 << 30


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.08, 0.2])
def test_an_interrupted_recover_can_be_run_again(guests_host, sim_images, delay):
    host = guests_host
    before, whole, _ = kill_at(host, sim_images["4.19"], "restore-pass2")
    env = dict(os.environ, HYPERV_SIM_DIR=str(host.state_dir))
    cut = subprocess.Popen([installed_command("hyperv-sim"), "recover", "--image", str(sim_images["4.19"])],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    # The hypervisor it may have started runs on in its own session: let it
    # finish or fail, then recover again.  Either the cut one got through
    # (its hypervisor runs: nothing to recover) or this one completes.
    wait_for(lambda: host.hyperv_sim("list").returncode == 0 or
             host.privcmd.running_pid() is None, "the hypervisor recover started to settle")
    res = host.hyperv_sim("recover", "--image", str(sim_images["4.18"]))
    if res.returncode != 0:
        one_line_error(res, "hyperv-sim", "running, not halted")
    assert_restored_whole(whole, full_state(host))
    wait_steps(host, since=before)
    assert host.toolstack("verify")["ok"]


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_ram_file_removed_or_replaced_is_noticed_before_the_first_pause(guests_host, sim_images, how):
    host = guests_host
    ram = host.state_dir / "ram"
    host.load_lu(sim_images["4.19"])
    before, whole = domains_by_name(host), full_state(host)
    aside = host.state_dir / "ram.aside"      # the same inode, out of its name's way
    ram.rename(aside)
    if how == "replaced":
        ram.write_bytes(b"decoy")
    res = host.kexec_lu("exec")
    one_line_error(res, "kexec-lu", "the RAM file %s was %s while the host runs" % (ram, how),
                   "no live update can start")
    assert_restored_whole(whole, full_state(host))
    wait_steps(host, since=before)
    assert host.toolstack("verify")["ok"]
    if how == "replaced":
        assert ram.read_bytes() == b"decoy"
    aside.rename(ram)
    # Back under its name: the update goes through.
    assert host.kexec_lu("exec").returncode == 0
    assert host.toolstack("verify")["ok"]


def test_a_deleted_socket_is_made_again(guests_host):
    host = guests_host
    (host.state_dir / "privcmd").unlink()
    wait_for(lambda: (host.state_dir / "privcmd").exists(), "the socket to be back")
    assert host.hyperv_sim("list").returncode == 0
    assert "had gone; listening on it again" in (host.state_dir / "console.log").read_text()


def test_between_the_two_hypervisors_clients_are_told_to_retry(guests_host, sim_images):
    host = guests_host
    host.load_lu(sim_images["4.19"], "--append", "lu_stop=restore-start")
    pid = hypervisor_pid(host)
    proc = subprocess.Popen([installed_command("kexec-lu"), "exec"],
                            env=dict(os.environ, HYPERV_SIM_DIR=str(host.state_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: "lu_stop=restore-start: stopped" in (host.state_dir / "console.log").read_text(),
             "xen#2 to stop before its socket is up")
    for prog, args in (("hyperv-sim", ["list"]), ("kexec-lu", ["ranges"])):
        one_line_error(run_cli(prog, *args, state_dir=host.state_dir), prog, "does not answer yet",
                       "retry", status=2)
    os.kill(pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert host.toolstack("verify")["ok"]


def test_requests_that_would_hold_more_than_the_budget_are_turned_away(guests_host):
    """512 MiB frames announced and never sent: two are held (1 GiB), the
    next is told busy before any of its bytes are read."""
    import select
    from hyperv_sim.privcmd import MAX_INFLIGHT
    from xen_public import privcmd as wire
    host = guests_host
    path = str(host.state_dir / "privcmd")

    def announce(timeout=None):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(wire._LEN.pack(wire.MAX_FRAME))
        return s

    held = [announce() for _ in range(MAX_INFLIGHT // wire.MAX_FRAME)]

    def turned_away():
        # One of ours answered (a probe got in first and took its place)? Again.
        for i, s in enumerate(held):
            if select.select([s], [], [], 0)[0]:
                s.close()
                held[i] = announce()
        probe = announce(timeout=1)
        try:
            kind, reply = wire.recv_frame(probe)
        except socket.timeout:          # held: ours were not all read yet
            return False
        finally:
            probe.close()
        return kind == wire.KIND_TOOLSTACK and b"are held" in bytes(reply)

    try:
        wait_for(turned_away, "a request over the budget to be refused", timeout=60)
    finally:
        for s in held:
            s.close()
    assert host.hyperv_sim("list").returncode == 0


def test_ram_crosses_the_exec_as_the_open_file(guests_host, sim_images):
    """Removed between pre-flight and exec, the name could not lose RAM:
    xen#2 gets the open file.  (Here the name goes just after the update,
    which xen#2's pre-flight then refuses: the open file is what it runs on.)"""
    host = guests_host
    host.load_lu(sim_images["4.19"])
    assert host.kexec_lu("exec").returncode == 0
    pid = hypervisor_pid(host)
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = f.read().split(b"\0")
    fd = int(argv[argv.index(b"--ram-fd") + 1])
    assert os.path.samefile("/proc/%d/fd/%d" % (pid, fd), host.state_dir / "ram")
