"""Bad input of every kind, through the command lines a user types.

The rule: a mistake gets exactly one line on stderr that starts with the
program's name, a non-zero exit status, no Python traceback, nothing half
printed on stdout, and the host exactly as it was (free memory, frame use,
domains, loaded kexec images).

Each check names a distinctive word of the message it expects, so a different
failure (say, a crash in argument parsing) cannot pass for the right one.
"""
import gzip
import os
import random
import re
import struct

import pytest

from helpers import boot_host, loaded_images, one_line_error, run_cli, stop_host

MiB = 1 << 20
EM_386, EM_ARM = 3, 40
QUALIFIED_EXCEPTION = re.compile(r"\b[a-z_]+(\.[a-z_]+)+\.[A-Za-z]*(Error|Exception|Failure)\b")


# --------------------------------------------------------------- helpers

def snapshot(host):
    """What must not move when a command fails (hyperv-sim info --json / list --json
    fields, read over the same toolstack channel the CLI uses)."""
    info = host.toolstack("info")
    return {
        "free_memory": info["free_memory"],
        "frames": info["frames"],
        "domains": info["domains"],
        "kexec": info["kexec"],
        "lu_bootmem": info["lu_bootmem"],
        "xen": info["xen"],
        "pid": info["pid"],
        # Guests keep running: their step counts, CPU time and whether one is
        # on a pCPU at this instant (xl_state's r or b) move, nothing else may.
        "list": [{k: v for k, v in d.items() if k not in ("steps", "cpu_time_s", "xl_state")}
                 for d in host.toolstack("list")],
    }


def assert_no_host(state_dir):
    """A refused boot leaves no RAM, no socket, no hypervisor."""
    from hyperv_sim.bootloader import running_pid
    for name in ("ram", "privcmd", "xen.pid"):
        assert not os.path.exists(os.path.join(str(state_dir), name)), name
    assert running_pid(str(state_dir)) is None


# --------------------------------------------------------------- images

@pytest.fixture(scope="module")
def images(tmp_path_factory, xen_artifacts, sim_images):
    """Every kind of bad (or not-for-this-purpose) image, built once."""
    d = tmp_path_factory.mktemp("bad-images")
    out = {"missing": d / "no-such-xen.gz", "pe": xen_artifacts.xen_efi,
           "xen_syms": xen_artifacts.xen_syms, "directory": d}

    out["empty"] = d / "empty.gz"
    out["empty"].write_bytes(b"")

    real = xen_artifacts.xen_gz.read_bytes()
    out["truncated_gzip"] = d / "truncated.gz"
    out["truncated_gzip"].write_bytes(real[:len(real) // 2])

    garbage = random.Random(20240611).randbytes(256 * 1024)
    assert garbage[:4] != b"\x7fELF"
    out["gzip_of_garbage"] = d / "garbage.gz"
    out["gzip_of_garbage"].write_bytes(gzip.compress(garbage))
    out["corrupt_gzip"] = d / "corrupt.gz"
    out["corrupt_gzip"].write_bytes(b"\x1f\x8b\x08\x00" + garbage)

    elf = bytearray(gzip.decompress(sim_images["4.19"].read_bytes()))
    assert elf[:4] == b"\x7fELF" and elf[4] == 1, "mkimage should write ELF32"
    assert struct.unpack_from("<H", elf, 18)[0] == EM_386
    struct.pack_into("<H", elf, 18, EM_ARM)
    out["arm_gzip"] = d / "arm.gz"
    out["arm_gzip"].write_bytes(gzip.compress(bytes(elf)))
    out["arm_elf"] = d / "arm.elf"
    out["arm_elf"].write_bytes(bytes(elf))

    out["no_relocatable"] = d / "norel.gz"
    res = run_cli("hyperv-sim", "mkimage", "--xen-version", "4.19", "--no-relocatable",
                  "-o", out["no_relocatable"])
    assert res.returncode == 0, res
    out["too_big"] = d / "big.gz"
    res = run_cli("hyperv-sim", "mkimage", "--xen-version", "4.19", "--mem-size", "80M",
                  "--text-size", "1M", "-o", out["too_big"])
    assert res.returncode == 0, res
    return out


# (image, words the message must contain).  None of these is an image at all.
UNREADABLE = [
    ("missing", ["cannot read", "no such file"]),
    ("empty", ["empty"]),
    ("truncated_gzip", ["truncated", "gzip"]),
    ("gzip_of_garbage", ["not an ELF"]),
    ("corrupt_gzip", ["corrupt gzip"]),
    ("pe", ["not an ELF", "PE"]),
    ("arm_gzip", ["EM_ARM", "x86"]),
    ("arm_elf", ["EM_ARM", "x86"]),
]


@pytest.mark.parametrize("name,words", UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_info_rejects_unreadable_image(images, tmp_path, name, words):
    path = images[name]
    res = run_cli("kexec-lu", "info", path, state_dir=tmp_path)
    line = one_line_error(res, "kexec-lu", *words)
    assert os.path.basename(str(path)) in line, "the message must name the file"
    res = run_cli("kexec-lu", "info", "--json", path, state_dir=tmp_path)
    one_line_error(res, "kexec-lu", *words)


def test_info_rejects_directory(images):
    res = run_cli("kexec-lu", "info", images["directory"])
    one_line_error(res, "kexec-lu", "directory")


@pytest.fixture
def loaded_host(host, sim_images):
    """The host with a good live-update image already loaded: a failed load
    must leave it loaded, byte for byte."""
    res = host.kexec_lu("load", "--type", "liveupdate", sim_images["4.19"])
    assert res.returncode == 0, res
    assert loaded_images(host, "liveupdate") is not None
    return host


@pytest.mark.parametrize("name,words", UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_load_rejects_unreadable_image(loaded_host, images, name, words):
    before = snapshot(loaded_host)
    res = loaded_host.kexec_lu("load", "--type", "liveupdate", images[name])
    line = one_line_error(res, "kexec-lu", *words)
    assert os.path.basename(str(images[name])) in line
    assert snapshot(loaded_host) == before


@pytest.mark.parametrize("ktype", ["liveupdate", "default"])
def test_load_refuses_image_without_multiboot2_header(loaded_host, images, ktype):
    # xen-syms is a perfectly good ELF64 (info works) but not bootable.
    info = loaded_host.kexec_lu("info", "--json", images["xen_syms"])
    assert info.returncode == 0, info
    assert '"multiboot2": null' in info.stdout
    before = snapshot(loaded_host)
    res = loaded_host.kexec_lu("load", "--type", ktype, images["xen_syms"])
    one_line_error(res, "kexec-lu", "multiboot2", "xen-syms")
    assert snapshot(loaded_host) == before


def test_liveupdate_load_refuses_image_without_relocatable_tag(loaded_host, images):
    info = loaded_host.kexec_lu("info", "--json", images["no_relocatable"])
    assert info.returncode == 0, info
    assert '"relocatable": null' in info.stdout
    before = snapshot(loaded_host)
    res = loaded_host.kexec_lu("load", "--type", "liveupdate", images["no_relocatable"])
    one_line_error(res, "kexec-lu", "relocatable")
    assert snapshot(loaded_host) == before


def test_image_larger_than_window_names_shortfall_and_a_size_that_fits(
        loaded_host, images, sim_images, tmp_path):
    big = images["too_big"]
    before = snapshot(loaded_host)
    res = loaded_host.kexec_lu("load", "--type", "liveupdate", big)
    line = one_line_error(res, "kexec-lu", "window")
    assert snapshot(loaded_host) == before

    shortfall = int(re.search(r"needs (\d+) bytes more", line).group(1))
    suggested = int(re.search(r"liveupdate=(\d+)M\b", line).group(1))
    assert before["xen"]["size"] == 3 * MiB and before["lu_bootmem"]["size"] == 64 * MiB
    # 64M of LU bootmem + 3M of Xen; the 80M image at 2M alignment ends at
    # the end of Xen, so it starts 78M below Xen, and xen#2 needs 1M of
    # bootmem under it: 79M, 15M more than there is.
    assert shortfall == 15 * MiB, line
    assert suggested == 79, line
    assert suggested * MiB - 64 * MiB == shortfall, \
        "growing liveupdate= by the shortfall must give the suggested size: %r" % line

    # The suggestion is honest: booted with it, the same host loads the image ...
    fits = tmp_path / "fits"
    try:
        h2 = boot_host(fits, sim_images["4.18"],
                       cmdline="liveupdate=%dM dom0_mem=256M" % suggested)
        res = h2.kexec_lu("load", "--type", "liveupdate", big)
        assert res.returncode == 0, res
        assert "result:" in res.stdout and "not loaded" not in res.stdout, res
        assert h2.kexec_lu("status", "--type", "liveupdate").returncode == 1
    finally:
        stop_host(fits)
    # ... and the shortfall was not overstated: with 1M less it does not fit.
    short = tmp_path / "short"
    try:
        h3 = boot_host(short, sim_images["4.18"],
                       cmdline="liveupdate=%dM dom0_mem=256M" % (suggested - 1))
        res = h3.kexec_lu("load", "--type", "liveupdate", big)
        line = one_line_error(res, "kexec-lu", "window")
        assert "needs %d bytes more" % MiB in line, line
        assert h3.kexec_lu("status", "--type", "liveupdate").returncode == 0
    finally:
        stop_host(short)


def test_liveupdate_load_on_host_without_liveupdate_bootmem(tmp_path, sim_images):
    state = tmp_path / "no-lu"
    try:
        h = boot_host(state, sim_images["4.18"], cmdline="dom0_mem=256M")
        before = snapshot(h)
        res = h.kexec_lu("load", "--type", "liveupdate", sim_images["4.19"])
        one_line_error(res, "kexec-lu", "liveupdate=")
        assert snapshot(h) == before
    finally:
        stop_host(state)


# --------------------------------------------------------------- load options

BAD_LOAD_OPTIONS = [
    ("cmdline_and_reuse", ["--type", "liveupdate", "--command-line", "console=vga",
                           "--reuse-cmdline"], ["--command-line", "--reuse-cmdline"]),
    ("unknown_type", ["--type", "bogus"], ["bogus", "--type"]),
    ("mem_min_not_a_number", ["--type", "liveupdate", "--mem-min", "banana"], ["--mem-min", "banana"]),
    ("mem_min_negative", ["--type", "liveupdate", "--mem-min", "-5"], ["--mem-min", "negative"]),
    ("mem_max_not_a_number", ["--type", "liveupdate", "--mem-max", "0xzz"], ["--mem-max"]),
    ("crash_without_crashkernel", ["--type", "crash"], ["crashkernel="]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in BAD_LOAD_OPTIONS],
                         ids=[c[0] for c in BAD_LOAD_OPTIONS])
def test_load_rejects_bad_options(loaded_host, sim_images, args, words):
    before = snapshot(loaded_host)
    res = loaded_host.kexec_lu("load", *(args + [sim_images["4.19"]]))
    one_line_error(res, "kexec-lu", *words)
    assert snapshot(loaded_host) == before


# An address beyond 64 bits is refused at parse time, naming the option.
def test_load_rejects_mem_min_beyond_64_bits(loaded_host, sim_images):
    before = snapshot(loaded_host)
    res = loaded_host.kexec_lu("load", "--mem-min", "0x10000000000000000000", sim_images["4.19"])
    one_line_error(res, "kexec-lu", "--mem-min")
    assert snapshot(loaded_host) == before


# When --mem-max is what keeps the image out, no liveupdate= size can help:
# the message must say so rather than suggest one.
def test_liveupdate_mem_max_too_low_blames_mem_max_not_the_window(loaded_host, sim_images):
    before = snapshot(loaded_host)
    res = loaded_host.kexec_lu("load", "--type", "liveupdate", "--mem-max", "0x1000",
                               sim_images["4.19"])
    line = one_line_error(res, "kexec-lu")
    assert "mem-max" in line or "0x1000" in line, line
    assert not re.search(r"liveupdate=\d+M", line), \
        "no liveupdate= size can help when --mem-max is the limit: %r" % line
    assert snapshot(loaded_host) == before


def test_unload_and_status_reject_unknown_type(loaded_host):
    before = snapshot(loaded_host)
    one_line_error(loaded_host.kexec_lu("unload", "--type", "bogus"), "kexec-lu", "bogus")
    assert snapshot(loaded_host) == before


# kexec -S semantics: 1 = loaded, 0 = not loaded, 255 = error; a usage error
# of `status` must not exit 1, which a script would read as "loaded".
@pytest.mark.parametrize("args", [["--type", "bogus"], ["--bogus"], ["extra"]],
                         ids=["unknown_type", "unknown_option", "extra_argument"])
def test_status_usage_error_exits_255_not_loaded(host, args):
    res = host.kexec_lu("status", *args)
    one_line_error(res, "kexec-lu", status=255)


# --------------------------------------------------------------- status (kexec -S)

def test_status_follows_kexec_S_convention(host, sim_images):
    res = host.kexec_lu("status", "--type", "liveupdate")
    assert (res.returncode, res.stdout.strip(), res.stderr) == (0, "liveupdate image not loaded", "")
    res = host.kexec_lu("load", "--type", "liveupdate", "--dry-run", sim_images["4.19"])
    assert res.returncode == 0, res
    assert host.kexec_lu("status", "--type", "liveupdate").returncode == 0, "dry run loaded nothing"
    assert host.kexec_lu("load", "--type", "liveupdate", sim_images["4.19"]).returncode == 0
    res = host.kexec_lu("status", "--type", "liveupdate")
    assert (res.returncode, res.stdout.strip(), res.stderr) == (1, "liveupdate image loaded", "")
    res = host.kexec_lu("status", "--type", "liveupdate", "--json")
    assert res.returncode == 1 and '"loaded": true' in res.stdout, res
    # Other types are independent.
    assert host.kexec_lu("status", "--type", "crash").returncode == 0
    assert host.kexec_lu("status", "--type", "default").returncode == 0
    assert host.kexec_lu("unload", "--type", "liveupdate").returncode == 0
    res = host.kexec_lu("status", "--type", "liveupdate", "--json")
    assert res.returncode == 0 and '"loaded": false' in res.stdout, res
    # Unloading what is not loaded is not an error.
    assert host.kexec_lu("unload", "--type", "liveupdate").returncode == 0


# --------------------------------------------------------------- no hypervisor

NO_HOST_COMMANDS = [
    ("kexec-lu", ["ranges"], 1),
    ("kexec-lu", ["ranges", "--json"], 1),
    ("kexec-lu", ["status"], 255),
    ("kexec-lu", ["status", "--type", "crash", "--json"], 255),
    ("kexec-lu", ["load", "--type", "liveupdate", "IMAGE"], 1),
    ("kexec-lu", ["unload", "--type", "liveupdate"], 1),
    ("hyperv-sim", ["list"], 1),
    ("hyperv-sim", ["list", "--json"], 1),
    ("hyperv-sim", ["info"], 1),
    ("hyperv-sim", ["info", "--json"], 1),
    ("hyperv-sim", ["create", "guest"], 1),
    ("hyperv-sim", ["destroy", "guest"], 1),
    ("hyperv-sim", ["dmesg"], 1),
    ("hyperv-sim", ["shutdown"], 1),
]


@pytest.mark.parametrize("prog,args,status", NO_HOST_COMMANDS,
                         ids=["%s-%s" % (c[0], "-".join(c[1])) for c in NO_HOST_COMMANDS])
def test_no_hypervisor_running(tmp_path, sim_images, prog, args, status):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [sim_images["4.19"] if a == "IMAGE" else a for a in args]
    res = run_cli(prog, *args, state_dir=empty)
    line = one_line_error(res, prog, "no hypervisor", str(empty), status=status)
    assert "HYPERV_SIM_DIR" in line or "hyperv-sim boot" in line, "say how to get one: %r" % line
    assert os.listdir(str(empty)) == [], "a failed client must not leave files behind"


def test_no_hypervisor_in_missing_directory(tmp_path):
    res = run_cli("kexec-lu", "status", state_dir=tmp_path / "nowhere")
    one_line_error(res, "kexec-lu", "no hypervisor", status=255)
    assert not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------- domains

BAD_CREATES = [
    ("size_not_a_number", ["--memory", "banana", "g1"], ["--memory", "banana"]),
    ("size_zero", ["--memory", "0", "g1"], ["memory", "0"]),
    ("size_too_small", ["--memory", "10K", "g1"], ["memory", "16M"]),
    ("duplicate_name", ["--memory", "64M", "web"], ["web", "already exists"]),
    ("duplicate_name_other_type", ["--type", "hvm", "--memory", "64M", "web"], ["already exists"]),
    # A path is a config file, as `xl create FILE` takes it.
    ("name_with_slash", ["--memory", "64M", "bad/name"], ["cannot read config file bad/name"]),
    ("name_empty", ["--memory", "64M", ""], ["the name must be"]),
    ("name_too_long", ["--memory", "64M", "a" * 65], ["the name must be"]),
    ("name_with_space", ["--memory", "64M", "two words"], ["the name must be"]),
    ("more_than_free", ["--memory", "4G", "g1"], ["out of memory"]),
    ("absurd_size", ["--memory", "100000G", "g1"], ["--memory", "at most 16T"]),
    ("all_digit_name", ["--memory", "64M", "7"], ["the name", "all digits", "domain id"]),
    ("vcpus_zero", ["--vcpus", "0", "g1"], ["--vcpus"]),
    ("unknown_type", ["--type", "xyz", "g1"], ["--type", "xyz"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in BAD_CREATES],
                         ids=[c[0] for c in BAD_CREATES])
def test_create_rejects(host, args, words):
    res = host.hyperv_sim("create", "--type", "pvh", "--memory", "128M", "web")
    assert res.returncode == 0, res
    before = snapshot(host)
    res = host.hyperv_sim("create", *args)
    one_line_error(res, "hyperv-sim", *words)
    assert snapshot(host) == before


def test_create_out_of_memory_then_a_fitting_one_still_works(host):
    # A refused allocation must not leak frames: the whole free memory is
    # still there for the next request.
    free = host.toolstack("info")["free_memory"]
    res = host.hyperv_sim("create", "--memory", "%dK" % (free // 1024 + 4), "huge")
    one_line_error(res, "hyperv-sim", "out of memory", "huge")
    # A PV guest with a v1 grant table also takes two Xen pages it shares
    # with the guest: its shared-info page and its grant frame.
    res = host.hyperv_sim("create", "--memory", "%dK" % (free // 1024 - 8), "exact")
    assert res.returncode == 0, res
    assert host.toolstack("info")["free_memory"] == 0


@pytest.mark.parametrize("op,domain,words", [
    ("destroy", "nosuch", ["no such domain", "nosuch"]),
    ("destroy", "99", ["no such domain", "99"]),
    ("destroy", "Domain-0", ["control domain", "Domain-0"]),
    ("destroy", "0", ["control domain", "Domain-0"]),
    ("pause", "nosuch", ["no such domain"]),
    ("unpause", "nosuch", ["no such domain"]),
], ids=["destroy-missing", "destroy-missing-id", "destroy-dom0", "destroy-dom0-by-id",
        "pause-missing", "unpause-missing"])
def test_domain_operations_on_wrong_domain(host, op, domain, words):
    before = snapshot(host)
    one_line_error(host.hyperv_sim(op, domain), "hyperv-sim", *words)
    assert snapshot(host) == before


# --------------------------------------------------------------- boot

@pytest.mark.parametrize("cmdline,words", [
    ("liveupdate=banana", ["liveupdate=", "banana"]),
    ("liveupdate=1500K", ["liveupdate=1500K", "MiB"]),
    ("liveupdate=", ["liveupdate="]),
    ("liveupdate", ["liveupdate"]),
    ("liveupdate=0", ["liveupdate=0"]),
    ("liveupdate=64M@nowhere", ["liveupdate=", "nowhere"]),
    ("liveupdate=64M dom0_mem=lots", ["dom0_mem=", "lots"]),
    ("liveupdate=64M 'unbalanced", ["command line"]),
], ids=["banana", "1500K", "empty-value", "no-value", "zero", "bad-base", "bad-dom0_mem",
        "unbalanced-quote"])
def test_boot_rejects_malformed_command_line(tmp_path, sim_images, cmdline, words):
    state = tmp_path / "host"
    try:
        res = run_cli("hyperv-sim", "boot", "--memory", "2G", "--cmdline", cmdline,
                      sim_images["4.18"], state_dir=state)
        one_line_error(res, "hyperv-sim", *words)
        assert_no_host(state)
    finally:
        stop_host(state)


@pytest.mark.parametrize("memory,words", [
    ("32M", ["64M"]),
    ("0", ["64M"]),
    ("65537K", ["whole number of MiB"]),
    ("32T", ["16T"]),
    ("abc", ["--memory", "abc"]),
    ("1.5G", ["--memory", "1.5G"]),
    ("-1G", ["--memory"]),
], ids=["too-small", "zero", "not-whole-MiB", "too-large", "not-a-number", "fraction",
        "negative"])
def test_boot_rejects_bad_memory(tmp_path, sim_images, memory, words):
    state = tmp_path / "host"
    try:
        res = run_cli("hyperv-sim", "boot", "--memory", memory, sim_images["4.18"],
                      state_dir=state)
        one_line_error(res, "hyperv-sim", *words)
        assert_no_host(state)
    finally:
        stop_host(state)


def test_boot_memory_too_small_for_its_liveupdate_reservation(tmp_path, sim_images):
    state = tmp_path / "host"
    try:
        res = run_cli("hyperv-sim", "boot", "--memory", "64M", "--cmdline", "liveupdate=64M",
                      sim_images["4.18"], state_dir=state)
        one_line_error(res, "hyperv-sim", "failed to boot", "liveupdate=64M", "does not fit")
        assert_no_host(state)
    finally:
        stop_host(state)


# dom0_mem larger than the host can give: the hypervisor panics with one
# clear line (no traceback) and nothing is left behind.
@pytest.mark.parametrize("memory,cmdline", [
    ("256M", "liveupdate=64M"),                 # default dom0_mem=512M
    ("2G", "liveupdate=64M dom0_mem=4G"),
], ids=["default-dom0_mem", "dom0_mem-too-big"])
def test_boot_memory_too_small_for_dom0(tmp_path, sim_images, memory, cmdline):
    state = tmp_path / "host"
    try:
        res = run_cli("hyperv-sim", "boot", "--memory", memory, "--cmdline", cmdline,
                      sim_images["4.18"], state_dir=state)
        line = one_line_error(res, "hyperv-sim", "failed to boot", "Domain-0", "out of memory")
        assert not QUALIFIED_EXCEPTION.search(line), "Python class name leaks: %r" % line
        assert_no_host(state)
        console = (state / "console.log").read_text()
        assert "PANIC" in console, "Xen says why it stopped on its console: %r" % console
        assert "Traceback" not in (state / "xen.stderr").read_text()
    finally:
        stop_host(state)


def test_boot_refuses_real_debian_xen(tmp_path, xen_artifacts):
    state = tmp_path / "host"
    try:
        res = run_cli("hyperv-sim", "boot", "--memory", "2G", xen_artifacts.xen_gz,
                      state_dir=state)
        one_line_error(res, "hyperv-sim", "personality", "xen-4.17-amd64.gz")
        assert_no_host(state)
    finally:
        stop_host(state)


@pytest.mark.parametrize("name,words", [("pe", ["not an ELF"]), ("xen_syms", ["multiboot2"]),
                                        ("missing", ["cannot read"]), ("empty", ["empty"])])
def test_boot_refuses_unbootable_files(tmp_path, images, name, words):
    state = tmp_path / "host"
    try:
        res = run_cli("hyperv-sim", "boot", "--memory", "2G", images[name], state_dir=state)
        one_line_error(res, "hyperv-sim", *words)
        assert_no_host(state)
    finally:
        stop_host(state)


def test_boot_twice_into_same_state_dir(host, sim_images):
    before = snapshot(host)
    console_before = host.hyperv_sim("dmesg").stdout
    assert "Xen version 4.18" in console_before
    res = host.hyperv_sim("boot", "--memory", "4G", sim_images["4.19"])
    one_line_error(res, "hyperv-sim", "already running", str(host.state_dir))
    # The first host still answers, unchanged, with its RAM and its log.
    assert host.toolstack("ping")["pid"] == before["pid"]
    assert snapshot(host) == before
    assert (host.state_dir / "ram").exists()
    after = host.hyperv_sim("dmesg")
    assert after.returncode == 0 and after.stdout.startswith(console_before), \
        "the second boot must not restart the console log"
    res = host.hyperv_sim("info", "--json")
    assert res.returncode == 0 and '"xen_version": "4.18.0"' in res.stdout, res


# --------------------------------------------------------------- mkimage

@pytest.mark.parametrize("version", ["4", "4.x", "abc", "", "4.18.1.2", "-4.18"])
def test_mkimage_rejects_bad_version(tmp_path, version):
    out = tmp_path / "xen.gz"
    res = run_cli("hyperv-sim", "mkimage", "--xen-version", version, "-o", out)
    one_line_error(res, "hyperv-sim", "mkimage", "version")
    assert not out.exists(), "a refused mkimage must not leave a file"


def test_mkimage_unwritable_output(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "xen.gz"
    res = run_cli("hyperv-sim", "mkimage", "--xen-version", "4.19", "-o", out)
    one_line_error(res, "hyperv-sim", "cannot write", "no such file")
