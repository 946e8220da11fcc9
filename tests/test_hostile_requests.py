"""Requests nobody here would send (issue 12, rules 6 and 7): the
hypervisor checks every toolstack request as strictly as the CLI, answers
with one line, and leaves nothing half-built; the clients read images and
config files only from regular files of bounded size."""
import json
import os
import socket

import pytest

from xen_public import privcmd as wire
from xen_public.errors import ToolstackRefused

from helpers import one_line_error, run_cli, wait_steps

GOOD = dict(name="g", type="pv", memory=32 << 20, vcpus=1)


def raw_toolstack(host, payload):
    """Send `payload` (bytes) as a toolstack request; -> the decoded reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(host.state_dir / "privcmd"))
    try:
        wire.send_frame(s, wire.KIND_TOOLSTACK, payload)
        kind, reply = wire.recv_frame(s)
    finally:
        s.close()
    assert kind == wire.KIND_TOOLSTACK
    return json.loads(bytes(reply))


@pytest.mark.parametrize("change, words", [
    (dict(workload_pages=10**9), ["workload_pages", "from 1 to 4096"]),
    (dict(seed=-5), ["seed", "from 0 to"]),
    (dict(seed=2**80), ["seed", "from 0 to"]),
    (dict(memory=1e30), ["memory", "integer"]),
    (dict(memory=float("inf")), ["memory", "integer"]),
    (dict(memory=10**30), ["memory", "at most 16T"]),
    (dict(memory=True), ["memory", "integer"]),
    (dict(vcpus="2"), ["vcpus", "integer"]),
    (dict(pci="0000:03:00.0"), ["pci", "must be a list"]),
    (dict(pci=["zz:zz.z"]), ["pci", "not a PCI device"]),
    (dict(name="12"), ["name", "all digits"]),
    (dict(name=["g"]), ["name", "string"]),
    (dict(type="xen"), ["type"]),
    (dict(extra=1), ["unknown create field", "extra"]),
])
def test_a_hostile_create_is_refused_and_leaves_nothing(host, change, words):
    before = host.toolstack("info")["free_memory"]
    with pytest.raises(ToolstackRefused) as e:
        host.toolstack("create", **dict(GOOD, **change))
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    for w in words:
        assert w in message, message
    assert host.toolstack("info")["free_memory"] == before
    assert host.toolstack("verify")["ok"]
    assert "Traceback" not in (host.state_dir / "xen.stderr").read_text()
    # The next domain gets the next domid: no half-built one took it.
    dom = host.toolstack("create", **GOOD)
    assert dom["domid"] == 1


@pytest.mark.parametrize("payload, words", [
    (b"[" * 100000, ["bad toolstack request"]),
    (b'{"op": ["list"]}', ["unknown toolstack operation"]),
    (b'{"op": "destroy", "domain": [1]}', ["destroy", "domain must be"]),
    (b'{"op": "destroy"}', ["destroy needs 'domain'"]),
    (b'{"op": "destroy", "domain": "d", "detach": "yes"}', ["detach must be bool"]),
    (b'{"op": "list", "all": true}', ["list takes no argument 'all'"]),
    (b'{"op": "create", "name": "x", "type": "pv", "memory": Infinity, "vcpus": 1}', ["memory"]),
    (b'"just a string"', ["not an object"]),
    (json.dumps({"op": "ping", "pad": "x" * (2 << 20)}).encode(), ["at most 1048576"]),
])
def test_a_malformed_request_gets_one_line_and_the_host_carries_on(host, payload, words):
    reply = raw_toolstack(host, payload)
    assert reply["ok"] is False, reply
    for w in words:
        assert w in reply["error"], reply
    assert host.toolstack("ping")["pid"]
    assert "Traceback" not in (host.state_dir / "xen.stderr").read_text()


def test_a_domid_is_never_read_as_a_name(host):
    # Names cannot be all digits, so "1" is d1 and nothing else; a domid
    # that does not exist is an error, not a name lookup.
    a = host.toolstack("create", **dict(GOOD, name="a"))
    assert a["domid"] == 1
    one_line_error(host.hyperv_sim("destroy", "7"), "hyperv-sim", "no such domain: 7")
    assert host.hyperv_sim("destroy", "1").returncode == 0
    assert "a" not in {d["name"] for d in host.toolstack("list")}


@pytest.mark.parametrize("prog, args", [
    ("kexec-lu", ["load", "--type", "liveupdate", "{path}"]),
    ("kexec-lu", ["info", "{path}"]),
    ("hyperv-sim", ["create", "-f", "{path}"]),
])
@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_images_and_configs_are_read_only_from_regular_files(tmp_path, prog, args, kind):
    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    res = run_cli(prog, *[a.format(path=path) for a in args], state_dir=tmp_path / "none", timeout=20)
    one_line_error(res, prog, "not a regular file")


def test_a_config_with_a_30_digit_memory_is_refused_by_the_client(tmp_path):
    cfg = tmp_path / "g.cfg"
    cfg.write_text('name = "g"\nmemory = %d\n' % 10**29)
    res = run_cli("hyperv-sim", "create", "-f", str(cfg), state_dir=tmp_path / "none")
    one_line_error(res, "hyperv-sim", "memory", "at most 16T")


def test_exec_refuses_a_timeout_that_is_not_a_number(tmp_path):
    for bad in ("nan", "inf", "-inf"):
        res = run_cli("kexec-lu", "exec", "--timeout", bad, state_dir=tmp_path / "none")
        one_line_error(res, "kexec-lu", "--timeout")


def test_guests_run_on_after_all_that(host):
    host.toolstack("create", **GOOD)
    wait_steps(host)
