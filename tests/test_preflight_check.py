"""`kexec-lu check` (and `exec --dry-run`): every pre-flight check of a live
update and what would block its quiesce, with nothing paused and nothing
changed; exit 0 ready, 1 not, 2 busy."""
import json

import pytest

from xen_public import abi
from xen_public import lustream
from hyperv_sim.mkimage import write_image

from helpers import assert_restored_whole, boot_host, domains_by_name, full_state, one_line_error, \
    stop_host, wait_for, wait_steps
from test_liveupdate import wait_blocked_on_io


@pytest.fixture
def checked_host(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=2 << 30,
                     cmdline="liveupdate=64M dom0_mem=256M crashkernel=64M lu_quiesce_timeout=2000")
    host.toolstack("create", name="hvm", type="hvm", memory=128 << 20, vcpus=1)
    host.toolstack("create", name="pv", type="pv", memory=64 << 20, vcpus=1)
    yield host
    stop_host(state)


def check(host, *args):
    """(exit status, the JSON answer or None)."""
    res = host.kexec_lu("check", "--json", *args)
    return res.returncode, (json.loads(res.stdout) if res.stdout else None)


def unchanged(host, before, report):
    """Nothing the check could have touched moved: domains whole and
    running, the live-update report and loaded images as they were."""
    assert_restored_whole(before, full_state(host))
    assert all(d["state"] == "running" for d in domains_by_name(host).values() if d["name"] != "Domain-0")
    assert host.toolstack("lu-report") == report


def test_without_an_image_it_says_what_exec_would(checked_host):
    host = checked_host
    before, report = full_state(host), host.toolstack("lu-report")
    rc, answer = check(host)
    # The HVM guest may be in the middle of an I/O its device model is
    # answering: listed, but it blocks nothing (the paused-model test below
    # has one that blocks).
    waiting = answer.pop("waiting")
    assert rc == 1 and answer == {"ready": False, "error": "no live-update image loaded",
                                  "from_version": "4.18.0", "to_version": None, "crash_image": None,
                                  "reboot_image": None}
    assert all(not w["blocks"] and w["name"] == "hvm" for w in waiting), waiting
    unchanged(host, before, report)


def test_a_ready_host_is_ready_and_exec_then_works(checked_host, sim_images):
    host = checked_host
    host.load_lu(sim_images["4.19"])
    assert host.kexec_lu("load", "-t", "crash", str(sim_images["4.19"])).returncode == 0
    before, report = full_state(host), host.toolstack("lu-report")
    for args in ((), ("--dry-run",)):
        res = host.kexec_lu("exec", "--dry-run", "--json") if args else host.kexec_lu("check", "--json")
        assert res.returncode == 0, res
        answer = json.loads(res.stdout)
        assert (answer["ready"], answer["error"], answer["to_version"], answer["crash_image"],
                answer["reboot_image"]) == (True, None, "4.19.0", "to carry", "none")
        assert all(not w["blocks"] for w in answer["waiting"])
    unchanged(host, before, report)
    res = host.kexec_lu("exec")
    assert res.returncode == 0 and "complete: Xen 4.18.0 -> 4.19.0" in res.stdout, res


def test_a_paused_device_model_blocks_and_nothing_is_paused(checked_host, sim_images):
    host = checked_host
    host.load_lu(sim_images["4.19"])
    host.toolstack("pause", domain="0")
    wait_blocked_on_io(host, "hvm")
    report = host.toolstack("lu-report")
    steps = domains_by_name(host)
    rc, answer = check(host)
    assert rc == 1 and answer["ready"] is False and answer["error"] is None
    assert answer["waiting"] == [{
        "domid": 1, "name": "hvm", "vcpu": 0, "blocks": True,
        "waits_for": "waiting for its device model in d0 (Domain-0), which the administrator paused "
                     "(unpause it and retry)"}]
    res = host.kexec_lu("check")
    assert res.returncode == 1
    assert res.stdout.splitlines()[0].split(None, 1) == [
        "pre-flight:", "would not complete: a vCPU waits on something that cannot answer"]
    # Nothing was paused by the check: the PV guest still runs.
    assert host.toolstack("lu-report") == report
    wait_steps(host, since=steps, names=["pv"])
    host.toolstack("unpause", domain="0")
    assert check(host)[0] == 0


def test_a_record_the_image_cannot_restore_is_refused_as_exec_would(checked_host, tmp_path):
    host = checked_host
    old = tmp_path / "old.gz"
    write_image(str(old), xen_version="4.19",
                lu_record_types=[t for t in lustream.ALL_RECORD_TYPES if t != lustream.REC_LU_IOREQ_SERVER])
    host.load_lu(old)
    rc, answer = check(host)
    want = "xen#2 (4.19.0) cannot restore LU_IOREQ_SERVER records, needed because d1 (hvm) has an IOREQ server"
    assert rc == 1 and answer["error"] == want
    res = host.kexec_lu("exec")
    one_line_error(res, "kexec-lu", want)


def test_while_an_update_runs_it_is_busy(checked_host, sim_images):
    host = checked_host
    host.load_lu(sim_images["4.19"])
    host.toolstack("pause", domain="0")
    wait_blocked_on_io(host, "hvm")
    host.client.kexec_exec(abi.KEXEC_TYPE_LIVEUPDATE)       # waits up to 2 s for the quiesce
    one_line_error(host.kexec_lu("check"), "kexec-lu", "in progress", status=2)
    wait_for(lambda: host.toolstack("lu-report")["state"] != "running", "the update to give up", timeout=30)
    host.toolstack("unpause", domain="0")
