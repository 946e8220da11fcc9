"""`hyperv-sim history`: every live update of the host, whoever saw it end
(xen#1 a refusal or an abort, xen#2 a completion or a halt, the boot loader
a recovery), oldest first, across the updates themselves; a new boot starts
it afresh."""
import json

from kexec_lu.liveupdate import run_live_update

from helpers import boot_host, stop_host


def history(host):
    res = host.hyperv_sim("history", "--json")
    assert res.returncode == 0, res
    return json.loads(res.stdout)


def test_every_update_abort_halt_and_recovery_is_in_the_history(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"])
    try:
        assert history(host) == []
        assert host.kexec_lu("exec").returncode == 1                     # refused: nothing loaded
        host.load_lu(sim_images["4.19"])
        host.toolstack("lu-fault", point="save")
        aborted = run_live_update(host.client, timeout=60)
        done = run_live_update(host.client, timeout=60)                  # the retry completes
        host.load_lu(sim_images["4.18"], "--append", "lu_fault=restore-pass1")
        halted = run_live_update(host.client, timeout=60)
        assert host.hyperv_sim("recover", "--image", str(sim_images["4.18"])).returncode == 0
        got = history(host)
        assert [(e["outcome"], e["from_version"], e["to_version"]) for e in got] == [
            ("refused", "4.18.0", None), ("aborted", "4.18.0", "4.19.0"), ("complete", "4.18.0", "4.19.0"),
            ("halted", "4.19.0", "4.18.0"), ("recover", None, "4.18.0"), ("complete", "4.19.0", "4.18.0")]
        assert [e["id"] for e in got[1:]] == [aborted["id"], done["id"], halted["id"], None, halted["id"]]
        assert got[0]["error"] == "no live-update image loaded"
        assert got[1]["error"] == "injected fault at save"
        assert got[2]["blackout_ms"] == done["blackout_ms"] and got[2]["error"] is None
        assert [p["name"] for p in got[2]["phases"]] == [p["name"] for p in done["phases"]]
        assert got[3]["error"] == halted["error"]
        assert got[4]["image"] == str(sim_images["4.18"]) and "restore-pass1" in got[4]["halted"]
        times = [e["time"] for e in got]
        assert times == sorted(times)
        # The table, one line per entry under its header.
        lines = host.hyperv_sim("history").stdout.splitlines()
        assert lines[0].split() == ["ID", "Time", "(UTC)", "From", "To", "Outcome", "Blackout(ms)"]
        assert [line.split()[5] for line in lines[1:] if line.split()[0] != "-"] == \
            ["refused", "aborted", "complete", "halted", "complete"]
    finally:
        stop_host(state)
    host = boot_host(state, sim_images["4.18"])
    try:
        assert history(host) == []                  # a new machine, a history of its own
    finally:
        stop_host(state)


def test_a_damaged_history_is_one_line_and_nothing_changes(tmp_path, sim_images):
    """A line cut short (a full disk) is named, not a traceback."""
    from helpers import one_line_error
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"])
    try:
        assert host.kexec_lu("exec").returncode == 1                     # one entry: refused
        path = state / "history.jsonl"
        good = path.read_text()
        path.write_text(good + '{"id": 7, "ti')
        one_line_error(host.hyperv_sim("history"), "hyperv-sim", "history.jsonl", "line 2",
                       "not a history entry")
        assert path.read_text() == good + '{"id": 7, "ti'
    finally:
        stop_host(state)
