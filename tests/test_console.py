"""`hyperv-sim dmesg` as `xl dmesg`, across live updates: what earlier
hypervisors printed stays, timestamps keep increasing, each hypervisor
starts with a line naming its incarnation; `dmesg -c` clears; a host
booted afresh does not show the previous host's lines."""
import re

from kexec_lu.liveupdate import run_live_update

from helpers import boot_host, stop_host

STAMP = re.compile(r"^\(XEN\) \[ *([0-9]+\.[0-9]{6})\] (.*)$")


def dmesg(host, *args):
    res = host.hyperv_sim("dmesg", *args)
    assert res.returncode == 0, res
    return [STAMP.match(line).groups() for line in res.stdout.splitlines()]


def test_the_console_outlives_a_live_update_and_clears_as_xl_does(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"])
    try:
        host.load_lu(sim_images["4.19"])
        assert run_live_update(host.client, timeout=60)["state"] == "complete"
        lines = dmesg(host)
        texts = [t for _, t in lines]
        stamps = [float(s) for s, _ in lines]
        assert stamps == sorted(stamps), "timestamps go back across the update"
        assert texts[0] == "---- power on ----" and texts.count("---- power on ----") == 1
        marks = [i for i, t in enumerate(texts) if t.startswith("---- hypervisor incarnation ")]
        assert len(marks) == 2
        # xen#1's lines, to its jump, then xen#2's.
        assert texts[marks[0] + 1] == "Xen version 4.18.0 (hyperv-sim), 2048 MiB RAM, 2 CPUs"
        assert texts[marks[1] + 1] == "Xen version 4.19.0 (hyperv-sim), 2048 MiB RAM, 2 CPUs"
        assert texts[marks[1] - 1].startswith("exec into the new hypervisor at 0x")
        # -c prints, then clears: the next read shows only what came after.
        assert dmesg(host, "-c") == lines
        assert dmesg(host) == []
        host.toolstack("create", name="g", type="pv", memory=64 << 20, vcpus=1)
        assert [t for _, t in dmesg(host)][0].startswith("d1: created PV g, 64M")
    finally:
        stop_host(state)
    # The same directory booted afresh: a new host, whose console starts at power-on.
    host = boot_host(state, sim_images["4.18"])
    try:
        texts = [t for _, t in dmesg(host)]
        assert texts[0] == "---- power on ----" and not any("created g" in t for t in texts)
    finally:
        stop_host(state)
