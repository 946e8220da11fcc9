"""Guests' workloads run at a rate (workload_rate= on the boot line, per
domain in a config or with --workload-rate): an idle host costs next to no
CPU, and the rate, like the CPU time `hyperv-sim list` shows, is the
guest's own and survives a live update.  (What an idle host costs is
measured in `make bench`; here only what the limiter promises.)"""
import time

import pytest

from hyperv_sim._lu_core import ffi, lib
from hyperv_sim.guest import parse_workload_rate
from kexec_lu.liveupdate import run_live_update

from helpers import boot_host, domains_by_name, one_line_error, run_cli, stop_host, wait_for

BURST_S = 0.1           # a vCPU behind its rate catches up at most this much (lu_workload.c)


@pytest.mark.parametrize("text, rate", [("max", 0), ("0", 0), ("1", 1), ("100k", 100000),
                                        ("2M", 2000000), ("4G", 4000000000), ("4000000000", 4000000000)])
def test_a_rate_is_steps_a_second_or_max(text, rate):
    assert parse_workload_rate(text) == rate


@pytest.mark.parametrize("text", ["", "5G", "4000000001", "1.5k", "-1", "100K", "fast", "k"])
def test_anything_else_is_refused_saying_what_a_rate_is(text):
    with pytest.raises(ValueError) as e:
        parse_workload_rate(text)
    assert str(e.value) == ("workload rate %r: steps a second from 1 to 4G (e.g. 100k, 2M), or max"
                            % text)


S = 10 ** 9                 # a second, in the limiter's nanoseconds


def test_the_limiter_gives_a_vcpu_its_rate_and_one_burst_of_arrears():
    """lu_rate_allows with the clock given: the arithmetic the scheduler
    runs every turn (lu_workload.c), independent of how fast this machine is."""
    v = ffi.new("struct lu_vcpu *")
    v.rate, v.steps = 1000, 0
    t = 5 * S
    assert lib.lu_rate_allows(v, t) == 0                    # the first look anchors the budget
    assert lib.lu_rate_allows(v, t + S // 20) == 50         # 50 ms: 50 steps
    v.steps = 50
    assert lib.lu_rate_allows(v, t + S // 20) == 0          # spent
    assert lib.lu_rate_allows(v, t + S // 20 + S // 1000) == 1
    # Ten seconds behind (paused, starved): it catches up 100 ms, not 10 s.
    assert lib.lu_rate_allows(v, t + 10 * S) == 100
    v.steps = 150
    assert lib.lu_rate_allows(v, t + 10 * S) == 0
    assert lib.lu_rate_allows(v, t + 10 * S + S // 10) == 100   # and then its rate again
    # A clock that went back re-anchors; no rate is no limit.
    assert lib.lu_rate_allows(v, t) == 0
    v.rate = 0
    assert lib.lu_rate_allows(v, t) == 2 ** 32 - 1
    # The biggest rate over a long wait neither overflows nor exceeds one burst.
    v.rate, v.steps, v.budget_ns = 4 * 10 ** 9, 0, 0
    assert lib.lu_rate_allows(v, S) == 0
    assert lib.lu_rate_allows(v, S + 3600 * S) == 4 * 10 ** 8


@pytest.fixture
def paced_host(tmp_path, sim_images):
    """Xen 4.18 whose domains run 20k steps a second per vCPU by default."""
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], cmdline="liveupdate=64M dom0_mem=256M workload_rate=20k")
    yield host
    stop_host(state)


def steps_over(host, name, seconds):
    """(steps the domain ran, seconds it had, by the clock around the reads)."""
    t0 = time.monotonic()
    s0 = domains_by_name(host)[name]["steps"]
    time.sleep(seconds)
    s1 = domains_by_name(host)[name]["steps"]
    return s1 - s0, time.monotonic() - t0


def test_no_vcpu_runs_more_than_its_rate(paced_host):
    host = paced_host
    res = host.hyperv_sim("create", "--type", "pv", "--memory", "64", "--workload-rate", "5k", "slow")
    assert res.returncode == 0, res
    dom = domains_by_name(host)
    assert (dom["Domain-0"]["workload_rate"], dom["slow"]["workload_rate"]) == (20000, 5000)
    wait_for(lambda: domains_by_name(host)["slow"]["steps"] > 0, "the paced guest to run")
    for name, rate, vcpus in (("Domain-0", 20000, 2), ("slow", 5000, 1)):
        steps, elapsed = steps_over(host, name, 1.0)
        # At most its rate over the time it had, plus one catch-up burst per
        # vCPU; at least something (the bound says nothing of a slow machine).
        assert 0 < steps <= vcpus * rate * (elapsed + BURST_S), (name, steps, elapsed)


def test_the_rate_and_cpu_time_survive_a_live_update(paced_host, sim_images):
    host = paced_host
    res = host.hyperv_sim("create", "--type", "hvm", "--memory", "128", "--workload-rate", "max", "fast")
    assert res.returncode == 0, res
    wait_for(lambda: domains_by_name(host)["fast"]["cpu_time_s"] > 0, "CPU time to be counted")
    before = domains_by_name(host)
    host.load_lu(sim_images["4.19"])
    assert run_live_update(host.client, timeout=60)["state"] == "complete"
    after = domains_by_name(host)
    assert {n: d["workload_rate"] for n, d in after.items()} == {"Domain-0": 20000, "fast": 0}
    for name in before:
        assert after[name]["cpu_time_s"] >= before[name]["cpu_time_s"] > 0, name
    # `list` shows it as xl list does, in seconds, in xl's columns; -v adds the simulator's.
    res = host.hyperv_sim("list")
    assert res.stdout.splitlines()[0].split() == ["Name", "ID", "Mem", "VCPUs", "State", "Time(s)"]
    res = host.hyperv_sim("list", "-v")
    assert res.stdout.splitlines()[0].split() == ["Name", "ID", "Mem", "VCPUs", "State", "Time(s)",
                                                  "Type", "Steps", "PCI"]


def test_a_config_file_takes_a_rate_and_bad_ones_are_one_line(paced_host, tmp_path):
    host = paced_host
    cfg = tmp_path / "g.cfg"
    cfg.write_text('name = "g"\ntype = "pvh"\nmemory = 64\nworkload_rate = "2M"\n')
    assert host.hyperv_sim("create", "-f", str(cfg)).returncode == 0
    assert domains_by_name(host)["g"]["workload_rate"] == 2000000
    one_line_error(host.hyperv_sim("create", "--memory", "64", "--workload-rate", "fast", "h"),
                   "hyperv-sim", "--workload-rate", "steps a second")
    cfg.write_text('name = "h"\nmemory = 64\nworkload_rate = "1.5k"\n')
    one_line_error(host.hyperv_sim("create", "-f", str(cfg)), "hyperv-sim", "workload_rate")
    assert "h" not in domains_by_name(host)


def test_a_bad_boot_rate_is_refused_before_anything_starts(tmp_path, sim_images):
    state = tmp_path / "bad"
    res = run_cli("hyperv-sim", "boot", "--memory", "1G", "--cmdline", "liveupdate=64M workload_rate=fast",
                  str(sim_images["4.18"]), state_dir=state)
    one_line_error(res, "hyperv-sim", "workload_rate=fast", "steps a second from 1 to 4G")
    assert not (state / "ram").exists()


def test_list_states_are_xls_six_flags(paced_host):
    """r on a pCPU now, b running but on none, p paused, d dying (xl list)."""
    host = paced_host
    for name in ("idle", "held", "going"):
        assert host.hyperv_sim("create", "--memory", "64", "--workload", "idle", name).returncode == 0
    host.toolstack("pause", domain="held")
    host.toolstack("destroy", domain="going", detach=False)
    states = {d["name"]: (d["state"], d["xl_state"]) for d in host.toolstack("list")}
    # An idle workload never runs a step, so its vCPU is on no pCPU: -b----.
    assert (states["idle"], states["held"], states["going"]) == (
        ("running", "-b----"), ("paused", "--p---"), ("dying", "-----d"))
    rows = {line.split()[0]: line.split()[4] for line in host.hyperv_sim("list").stdout.splitlines()[1:]}
    assert (rows["idle"], rows["held"], rows["going"]) == ("-b----", "--p---", "-----d")
