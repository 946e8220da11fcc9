"""A host on a small filesystem (issue 12, rule 3): every frame the
hypervisor hands out is backed on disk when it hands it out, so a full disk
is a one-line refusal at create or an aborted update with every domain
resumed, never a SIGBUS that takes the host."""
import os
import subprocess

import pytest

from helpers import domains_by_name, full_state, assert_restored_whole, one_line_error, run_cli, \
    stop_host, wait_steps, Host

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root "
                                "(CI runs as root)")
CMDLINE = "liveupdate=16M dom0_mem=32M"


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs", str(mnt)], check=True)
    yield mnt
    stop_host(mnt / "host")
    subprocess.run(["umount", str(mnt)], check=True)


def boot_small(small_fs, image):
    res = run_cli("hyperv-sim", "boot", "--memory", "1G", "--cmdline", CMDLINE, str(image),
                  state_dir=small_fs / "host")
    assert res.returncode == 0, res
    return Host(small_fs / "host"), res


def fill(small_fs, leave):
    """Take all but `leave` bytes of the filesystem."""
    st = os.statvfs(small_fs)
    size = st.f_bavail * st.f_frsize - leave
    with open(small_fs / "filler", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    return small_fs / "filler"


def test_boot_says_what_disk_the_host_may_need(small_fs, sim_images):
    _, res = boot_small(small_fs, sim_images["4.18"])
    assert "RAM may take up to 1 GiB" in res.stdout
    assert "guests beyond that are refused at create" in res.stdout


def test_a_guest_the_disk_cannot_hold_is_refused_at_create(small_fs, sim_images):
    host, _ = boot_small(small_fs, sim_images["4.18"])
    free = host.toolstack("info")["free_memory"]
    res = host.hyperv_sim("create", "--memory", "256M", "big")
    one_line_error(res, "hyperv-sim", "cannot create big", "no disk for host RAM")
    assert host.toolstack("info")["free_memory"] == free
    assert host.toolstack("verify")["ok"]
    # One that fits runs and writes its memory, on the same full-ish disk.
    assert host.hyperv_sim("create", "--memory", "16M", "small").returncode == 0
    wait_steps(host, names=["small"], at_least=1000)
    assert host.toolstack("verify")["ok"]


def test_a_save_that_cannot_get_disk_aborts_and_every_domain_resumes(small_fs, sim_images):
    host, _ = boot_small(small_fs, sim_images["4.18"])
    assert host.hyperv_sim("create", "--memory", "16M", "g").returncode == 0
    host.load_lu(sim_images["4.19"])
    before, whole = domains_by_name(host), full_state(host)
    filler = fill(small_fs, 0)
    res = host.kexec_lu("exec")
    assert res.returncode == 1, res
    assert "aborted" in res.stdout + res.stderr and "no disk for host RAM" in res.stderr, res
    assert host.toolstack("info")["xen_version"] == "4.18.0"
    assert_restored_whole(whole, full_state(host))
    wait_steps(host, since=before)
    assert host.toolstack("verify")["ok"]
    filler.unlink()
    res = host.kexec_lu("exec")
    assert res.returncode == 0, res
    assert host.toolstack("verify")["ok"]
