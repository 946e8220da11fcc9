"""A loaded crash image survives a live update: the stream carries it
(LU_KEXEC_IMAGE), xen#2 takes it over once its bytes in the crash region
match the digest taken at load, and neither hypervisor touches those bytes.
A reboot image is not carried, and the operator is told."""
import json

import pytest

from helpers import assert_restored_whole, boot_host, full_state, loaded_images, read_ram, stop_host, \
    wait_steps, write_ram

CRASH = 64 << 20


@pytest.fixture
def carrying_host(tmp_path, sim_images):
    """Xen 4.18 with crashkernel=64M, a crash image loaded and two guests."""
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=2 << 30,
                     cmdline="liveupdate=64M dom0_mem=256M crashkernel=64M lu_quiesce_timeout=300")
    try:
        res = host.kexec_lu("load", "--type", "crash", str(sim_images["4.19"]))
        assert res.returncode == 0, res
        host.toolstack("create", name="pv", type="pv", memory=128 << 20, vcpus=1)
        host.toolstack("create", name="hvm", type="hvm", memory=128 << 20, vcpus=1)
        wait_steps(host, at_least=1 << 12)
        yield host
    finally:
        stop_host(state)


def crash_region(host):
    region = host.toolstack("info")["crash"]
    assert region["size"] == CRASH
    return region["start"], region["size"]


def status(host, ktype):
    """kexec -S's answer: 1 loaded, 0 not."""
    return host.kexec_lu("status", "--type", ktype).returncode


def test_a_crash_image_survives_an_update_and_a_rollback(carrying_host, sim_images):
    host = carrying_host
    image = loaded_images(host, "crash")
    assert image is not None and status(host, "crash") == 1
    start, size = crash_region(host)
    region = read_ram(host, start, size)
    before = full_state(host)
    for version in ("4.19", "4.18"):
        host.load_lu(sim_images[version])
        res = host.kexec_lu("exec")
        assert res.returncode == 0, res
        assert "carries the loaded crash image" in res.stdout
        assert "crash image: carried over, still loaded" in res.stdout
        assert host.toolstack("info")["xen_version"] == version + ".0"    # a bare X.Y image is X.Y.0
        # Still loaded, as it was: type, entry, segments, digest.
        assert loaded_images(host, "crash") == image and status(host, "crash") == 1
        assert crash_region(host) == (start, size)
        assert read_ram(host, start, size) == region, "a hypervisor wrote into the crash region"
        assert "kexec: crash image carried over: " in host.hyperv_sim("dmesg").stdout
        assert_restored_whole(before, full_state(host))
        rep = host.toolstack("verify")
        assert rep["ok"], rep["problems"]
    # kexec_op unload works on the image xen#2 took over: gone, and its
    # bytes scrubbed from the crash region.
    assert host.kexec_lu("unload", "--type", "crash").returncode == 0
    assert status(host, "crash") == 0 and loaded_images(host, "crash") is None
    seg = next(s for s in image["segments"] if not s["mapped_only"])
    assert read_ram(host, seg["dest"], seg["dest_size"]) == bytes(seg["dest_size"])


def test_a_crash_region_changed_behind_the_hypervisors_back_drops_the_image(carrying_host, sim_images):
    host = carrying_host
    seg = next(s for s in loaded_images(host, "crash")["segments"] if not s["mapped_only"])
    at = seg["dest"] + seg["buf_size"] // 2
    write_ram(host, at, bytes(b ^ 0xFF for b in read_ram(host, at, 16)))
    host.load_lu(sim_images["4.19"])
    res = host.kexec_lu("exec", "--json")
    assert res.returncode == 0, res          # the update itself goes on
    rep = json.loads(res.stdout)
    assert rep["state"] == "complete" and rep["crash_image"] == "dropped", rep
    why = ("the crash region no longer holds the bytes it was loaded with (SHA-256 differs): "
           "load it again")
    assert rep["crash_image_why"] == why
    assert status(host, "crash") == 0 and loaded_images(host, "crash") is None
    dmesg = host.hyperv_sim("dmesg").stdout.splitlines()
    assert [line for line in dmesg if "crash image" in line][-1].endswith("kexec: crash image dropped: " + why)
    rep = host.toolstack("verify")
    assert rep["ok"], rep["problems"]
    # The text report says it too, in one line.
    res = host.kexec_lu("load", "--type", "crash", str(sim_images["4.19"]))
    assert res.returncode == 0, res
    write_ram(host, at, bytes(b ^ 0x5A for b in read_ram(host, at, 16)))
    host.load_lu(sim_images["4.18"])
    res = host.kexec_lu("exec")
    assert res.returncode == 0, res
    assert [line for line in res.stdout.splitlines() if "crash image" in line][-1] == \
        "crash image: dropped: " + why


def test_a_reboot_image_is_not_carried_and_the_operator_is_told(carrying_host, sim_images):
    host = carrying_host
    res = host.kexec_lu("load", "--type", "default", str(sim_images["4.19"]))
    assert res.returncode == 0, res
    assert status(host, "default") == 1
    host.load_lu(sim_images["4.19"])
    res = host.kexec_lu("exec")
    assert res.returncode == 0, res
    assert "does not carry the loaded reboot image (it lives in xen#1's heap): load it again " \
           "after the update" in res.stdout
    assert status(host, "default") == 0 and loaded_images(host, "default") is None
    assert status(host, "crash") == 1
    # Its staging frames were xen#1's heap: free again, nothing leaked.
    assert "kexec-image" not in host.toolstack("info")["frames"]


def test_an_image_that_cannot_restore_the_record_is_refused_before_any_pause(carrying_host, tmp_path):
    """xen#2 must know LU_KEXEC_IMAGE to take the crash image over; an image
    that does not is refused at pre-flight, naming the way out."""
    from hyperv_sim.mkimage import write_image
    from xen_public import lustream as ls
    host = carrying_host
    old = tmp_path / "xen-old.gz"
    write_image(str(old), xen_version="4.19",
                lu_record_types=[t for t in ls.ALL_RECORD_TYPES if t != ls.REC_LU_KEXEC_IMAGE])
    host.load_lu(old)
    before = full_state(host)
    res = host.kexec_lu("exec")
    assert res.returncode == 1
    assert res.stderr.strip().endswith(
        "xen#2 (4.19.0) cannot restore LU_KEXEC_IMAGE records, needed because a crash image is loaded "
        "(kexec-lu unload -t crash to update without it)"), res.stderr
    assert host.toolstack("info")["xen_version"] == "4.18.0"
    assert_restored_whole(before, full_state(host))
