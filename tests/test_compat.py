"""The classic kexec-tools spellings (kexec-lu -l / -p / -u / -e / -S,
--load-live-update, --exec-live-update, ...) do what the subcommands do.

Each equivalence is checked on the hypervisor: the kexec image it holds
(segments, entry, sha256 of the bytes) after a classic load must equal the
one after the subcommand load, and status exit codes must agree.
"""
import pytest

from kexec_lu import compat

from helpers import boot_host, loaded_images, one_line_error, run_cli, stop_host

MiB = 1 << 20


# --------------------------------------------------------------- helpers

def quiet_ok(res):
    """kexec prints nothing on success; neither does a classic spelling."""
    assert res.returncode == 0, res
    assert res.stdout == "" and res.stderr == "", res


def same_image_both_ways(host, ktype, classic, subcommand):
    """Load with the subcommand, then (after unloading) with the classic
    spelling: the hypervisor must hold the very same image."""
    res = host.kexec_lu(*subcommand)
    assert res.returncode == 0, res
    want = loaded_images(host, ktype)
    assert want is not None
    assert host.kexec_lu("unload", "--type", ktype).returncode == 0
    assert loaded_images(host, ktype) is None
    res = host.kexec_lu(*classic)
    quiet_ok(res)
    assert loaded_images(host, ktype) == want
    return want


@pytest.fixture
def crash_host(tmp_path, sim_images):
    """A host with a crash region as well (crashkernel=)."""
    state = tmp_path / "crash-host"
    h = boot_host(state, sim_images["4.18"],
                  cmdline="liveupdate=64M dom0_mem=256M crashkernel=64M")
    yield h
    stop_host(state)


# --------------------------------------------------------------- parsing, as kexec's main() does

@pytest.mark.parametrize("argv, action, ktype", [
    (["-l", "x"], "load", "default"),
    (["--load", "x"], "load", "default"),
    (["x", "-l"], "load", "default"),                        # GNU getopt permutes
    (["-p", "x"], "load", "crash"),
    (["--load-panic", "x"], "load", "crash"),
    (["--load-live-update", "x"], "load", "liveupdate"),
    (["--load-live", "x"], "load", "liveupdate"),            # a unique prefix
    (["-l", "--load-live-update", "x"], "load", "liveupdate"),
    (["-u"], "unload", "default"),
    (["--unload"], "unload", "default"),
    (["-p", "-u"], "unload", "crash"),
    (["-u", "-p"], "unload", "crash"),
    (["-u", "--load-live-update"], "unload", "liveupdate"),
    (["-e"], "exec", "default"),
    (["--exec"], "exec", "default"),
    (["--exec-live-update"], "exec", "liveupdate"),
    (["-S"], "status", "crash"),                             # kexec -S: crash by default
    (["--status"], "status", "crash"),
    (["-S", "-l"], "status", "default"),
    (["-l", "-S"], "status", "default"),
    (["-S", "-p"], "status", "crash"),
    (["-S", "--load-live-update"], "status", "liveupdate"),
    (["-S", "--exec-live-update"], "status", "liveupdate"),
    (["-dS"], "status", "crash"),                            # short options cluster
])
def test_options_set_what_kexec_sets(argv, action, ktype):
    r = compat.parse(argv)
    actions = [a for a, on in (("load", r.do_load), ("unload", r.do_unload),
                               ("exec", r.do_exec), ("status", r.do_status)) if on]
    assert actions == [action]
    assert r.type_name == ktype


def test_unload_then_reload_in_one_go_as_kexec_does():
    r = compat.parse(["-u", "-p", "x"])
    assert r.do_unload and r.do_load and r.type_name == "crash"


def test_command_line_and_append_are_one_option_the_last_wins():
    assert compat.parse(["--command-line=a", "--append", "b", "-l", "x"]).command_line == "b"
    assert compat.parse(["--append=b", "--command-line", "a", "-l", "x"]).command_line == "a"
    r = compat.parse(["--reuse-cmdline", "--append=c", "-l", "x"])
    assert r.reuse_cmdline and r.command_line == "c"


def test_mem_min_and_max_take_addresses():
    r = compat.parse(["-l", "--mem-min=0x1000000", "--mem-max", "268435456", "x"])
    assert (r.mem_min, r.mem_max) == (0x1000000, 256 * MiB)


def test_short_type_takes_its_argument_in_either_form():
    assert compat.parse(["-tmultiboot2-x86", "-l", "x"]).loader == "multiboot2-x86"
    assert compat.parse(["-t", "elf-x86", "-l", "x"]).loader == "elf-x86"
    assert compat.parse(["--type=elf-x86_64", "-l", "x"]).loader == "elf-x86_64"


# --------------------------------------------------------------- help, version, mistakes

def test_version_is_the_same_in_both_spellings():
    group = run_cli("kexec-lu", "--version")
    for argv in (["-v"], ["--version"], ["-l", "-v"], ["-d", "--version"]):
        res = run_cli("kexec-lu", *argv)
        assert res.returncode == 0 and res.stderr == "", res
        assert res.stdout == group.stdout, (argv, res)
    assert group.stdout.startswith("kexec-lu, version ")


def test_group_help_names_the_classic_spellings_in_one_line():
    res = run_cli("kexec-lu", "--help")
    assert res.returncode == 0, res
    assert "load" in res.stdout and "exec" in res.stdout          # still the subcommand help
    mention = [l for l in res.stdout.splitlines() if "--load-live-update" in l]
    assert len(mention) == 1, res.stdout
    assert run_cli("kexec-lu", "-h").stdout == res.stdout


def test_classic_help_lists_every_classic_option():
    for argv in (["-l", "--help"], ["-h", "-S"], ["--exec-live-update", "-h"]):
        res = run_cli("kexec-lu", *argv)
        assert res.returncode == 0 and res.stderr == "", res
        for opt in ("-l, --load", "-p, --load-panic", "-u, --unload", "-e, --exec",
                    "-S, --status", "--load-live-update", "--exec-live-update",
                    "-t, --type", "multiboot2-x86", "elf-x86_64", "elf-x86", "--command-line",
                    "--append", "--reuse-cmdline", "--module", "--mem-min", "--mem-max",
                    "-d, --debug", "-v, --version", "-h, --help"):
            assert opt in res.stdout, (opt, argv)


@pytest.mark.parametrize("argv, words", [
    (["--bogus"], ["--bogus", "not recognized", "usage:"]),
    (["-l", "-z", "img"], ["-z", "not recognized", "usage:"]),
    (["-l", "-t"], ["-t", "requires argument", "usage:"]),
    (["--load-live-update=yes", "img"], ["--load-live-update", "argument"]),
    (["-l"], ["no image given"]),
    (["--load-live-update"], ["no image given", "--load-live-update"]),
    (["-l", "a.gz", "b.gz"], ["more than one image"]),
    (["-u", "img"], ["unexpected argument", "img"]),
    (["-e", "--append=x"], ["--append", "only applies when loading"]),
    (["-u", "--module", "m"], ["--module", "only applies when loading"]),
    (["-l", "-t", "bzImage64", "img"], ["bzImage64", "multiboot2-x86", "elf-x86_64", "elf-x86"]),
    (["-l", "--mem-min=lots", "img"], ["--mem-min", "lots"]),
    (["-d", "img"], ["no action given"]),                   # kexec IMAGE: load and reboot
    (["-l", "--module", "dom0.gz", "img"], ["--module", "not supported"]),
])
def test_mistakes_are_one_line_and_status_1(tmp_path, argv, words):
    # No host needed (and none consulted): these fail before any hypercall.
    res = run_cli("kexec-lu", *argv, state_dir=tmp_path)
    one_line_error(res, "kexec-lu", *words, status=1)


def test_an_image_alone_is_kexecs_load_and_reboot_refused_and_a_typo_is_not(tmp_path, sim_images):
    """`kexec-lu xen.gz` is kexec's spelling of load-and-reboot, refused in
    kexec's terms; a word that names no file is a mistyped subcommand."""
    for image in (sim_images["4.19"], "./not-there.gz"):
        res = run_cli("kexec-lu", image, state_dir=tmp_path)
        one_line_error(res, "kexec-lu", "no action given", "loading and rebooting in one step is "
                       "not supported")
    res = run_cli("kexec-lu", "lod", state_dir=tmp_path)
    one_line_error(res, "kexec-lu", "No such command 'lod'", "'load'")


@pytest.mark.parametrize("argv", [["-S", "--bogus"], ["--bogus", "-S"], ["-S", "x"],
                                  ["--status", "--append=x"], ["-S"]])
def test_every_failure_of_status_is_255(tmp_path, argv):
    """kexec -S answers with its exit status (1 = loaded): an error must not
    read as an answer, so it is 255 (kexec's -1), a mistyped option too."""
    res = run_cli("kexec-lu", *argv, state_dir=tmp_path / "nohost")
    one_line_error(res, "kexec-lu", status=255)


def test_an_image_that_is_not_there_is_named(host, tmp_path):
    res = host.kexec_lu("--load-live-update", tmp_path / "missing.gz")
    one_line_error(res, "kexec-lu", "missing.gz", "cannot read")
    assert loaded_images(host, "liveupdate") is None


# --------------------------------------------------------------- loads: the same image both ways

def test_load_live_update_is_load_type_liveupdate(host, sim_images):
    img = sim_images["4.19"]
    # kexec carries none of the running hypervisor's options; kexec-lu's
    # load does unless --command-line says otherwise.
    same_image_both_ways(host, "liveupdate", ["--load-live-update", img],
                         ["load", "--type", "liveupdate", "--command-line", "", img])


def test_load_is_load_type_default(host, sim_images):
    img = sim_images["4.19"]
    same_image_both_ways(host, "default", ["-l", img], ["load", "-t", "default", img])
    same_image_both_ways(host, "default", [img, "--load"], ["load", "--type", "default", img])


def test_load_panic_is_load_type_crash(crash_host, sim_images):
    img = sim_images["4.19"]
    same_image_both_ways(crash_host, "crash", ["-p", img], ["load", "--type", "crash", img])
    same_image_both_ways(crash_host, "crash", ["--load-panic", img], ["load", "-t", "crash", img])


@pytest.mark.parametrize("classic, subcommand", [
    (["--command-line=console=com1 loglvl=all"], ["--command-line", "console=com1 loglvl=all"]),
    (["--append", "console=com1"], ["--command-line", "console=com1"]),
    (["--command-line=a=1", "--append=b=2"], ["--command-line", "b=2"]),       # the last wins
    # A stale liveupdate= is dropped exactly as the subcommand drops it.
    (["--command-line=liveupdate=8M dom0_mem=1G"], ["--command-line", "liveupdate=8M dom0_mem=1G"]),
    (["--reuse-cmdline"], ["--reuse-cmdline"]),
    (["--reuse-cmdline", "--append=console=vga"], ["--reuse-cmdline", "--append", "console=vga"]),
    (["--append=console=vga", "--reuse-cmdline"], ["--reuse-cmdline", "--append", "console=vga"]),
    (["--mem-max=0x7ff00000"], ["--command-line", "", "--mem-max", "0x7ff00000"]),
    (["-t", "multiboot2-x86"], ["--command-line", ""]),
    (["--type=elf-x86"], ["--command-line", ""]),                        # sim images are ELF32 i386, like xen.gz
])
def test_load_options_mean_what_the_subcommand_options_mean(host, sim_images, classic, subcommand):
    img = sim_images["4.19"]
    same_image_both_ways(host, "liveupdate", ["--load-live-update"] + classic + [img],
                         ["load", "--type", "liveupdate"] + subcommand + [img])


def test_mem_min_and_max_for_a_default_load(host, sim_images):
    img = sim_images["4.19"]
    got = same_image_both_ways(host, "default", ["-l", "--mem-min", "0x10000000", img],
                               ["load", "-t", "default", "--mem-min", "0x10000000", img])
    image = max(got["segments"], key=lambda s: s["dest_size"])
    assert image["dest"] >= 0x10000000
    res = host.kexec_lu("-l", "--mem-min=0x10000000", "--mem-max=0x10001000", img)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res
    assert loaded_images(host, "default") == got             # a failed load changes nothing


def test_debug_prints_the_load_plan_on_stderr(host, sim_images):
    img = sim_images["4.19"]
    plan = host.kexec_lu("load", "--type", "liveupdate", "--command-line", "", "--dry-run", img).stdout
    res = host.kexec_lu("-d", "--load-live-update", img)
    assert res.returncode == 0 and res.stdout == "", res
    assert res.stderr == plan.replace("not loaded (--dry-run)", "loaded")


# --------------------------------------------------------------- -t: the image loader

def test_type_elf_x86_64_refuses_the_elf32_xen_gz(host, xen_artifacts):
    res = host.kexec_lu("-t", "elf-x86_64", "-l", xen_artifacts.xen_gz)
    one_line_error(res, "kexec-lu", "elf-x86_64", "ELF64", "ELF32")
    assert loaded_images(host, "default") is None


def test_type_elf_x86_accepts_the_elf32_xen_gz(host, xen_artifacts):
    gz = xen_artifacts.xen_gz
    same_image_both_ways(host, "default", ["-t", "elf-x86", "-l", gz], ["load", "-t", "default", gz])
    same_image_both_ways(host, "default", ["--type", "multiboot2-x86", "-l", gz],
                         ["load", "-t", "default", gz])


def test_type_elf_x86_refuses_the_elf64_xen_syms(host, xen_artifacts):
    res = host.kexec_lu("--type=elf-x86", "-l", xen_artifacts.xen_syms)
    one_line_error(res, "kexec-lu", "elf-x86", "ELF32", "ELF64")


@pytest.mark.parametrize("loader", ["elf-x86_64", "multiboot2-x86"])
def test_xen_syms_has_no_multiboot2_header_whatever_the_loader(host, xen_artifacts, loader):
    """xen-syms is the ELF64 x86-64 file elf-x86_64 wants, but Xen boots
    only through its multiboot2 header, which xen-syms lacks."""
    res = host.kexec_lu("-t", loader, "-l", xen_artifacts.xen_syms)
    one_line_error(res, "kexec-lu", "multiboot2")
    assert loaded_images(host, "default") is None


# --------------------------------------------------------------- -S

def status_codes(host, *classic):
    res = host.kexec_lu(*classic)
    assert res.stdout == "" and res.stderr == "", res      # -S prints nothing
    return res.returncode


def test_status_answers_in_the_exit_code_as_the_subcommand_does(host, sim_images):
    def both(ktype, classic):
        sub = host.kexec_lu("status", "--type", ktype).returncode
        assert status_codes(host, *classic) == sub
        return sub

    assert both("liveupdate", ["-S", "--load-live-update"]) == 0
    assert both("default", ["-S", "-l"]) == 0
    assert both("crash", ["-S"]) == 0
    quiet_ok(host.kexec_lu("--load-live-update", sim_images["4.19"]))
    assert both("liveupdate", ["--status", "--load-live-update"]) == 1
    assert both("default", ["-l", "-S"]) == 0
    assert both("crash", ["-S"]) == 0           # -S alone asks about the crash image
    quiet_ok(host.kexec_lu("-l", sim_images["4.19"]))
    assert both("default", ["-S", "-l"]) == 1
    assert both("crash", ["-S", "-p"]) == 0


def test_status_of_the_crash_image_by_default(crash_host, sim_images):
    assert status_codes(crash_host, "-S") == 0
    quiet_ok(crash_host.kexec_lu("-p", sim_images["4.19"]))
    assert status_codes(crash_host, "-S") == 1
    assert status_codes(crash_host, "-S", "-p") == 1
    assert status_codes(crash_host, "-S", "-l") == 0
    assert status_codes(crash_host, "-S", "--load-live-update") == 0


def test_status_with_no_hypervisor_is_255(tmp_path):
    res = run_cli("kexec-lu", "-S", "--load-live-update", state_dir=tmp_path / "nohost")
    one_line_error(res, "kexec-lu", "no hypervisor", status=255)


# --------------------------------------------------------------- -u

def test_unload_takes_the_type_from_p_and_load_live_update(crash_host, sim_images):
    img = sim_images["4.19"]
    h = crash_host
    for argv in (["--load-live-update", img], ["-l", img], ["-p", img]):
        quiet_ok(h.kexec_lu(*argv))
    quiet_ok(h.kexec_lu("-u"))
    assert [loaded_images(h, t) is None for t in ("default", "crash", "liveupdate")] == \
        [True, False, False]
    quiet_ok(h.kexec_lu("-u", "-p"))
    assert loaded_images(h, "crash") is None and loaded_images(h, "liveupdate") is not None
    quiet_ok(h.kexec_lu("-p", img))
    quiet_ok(h.kexec_lu("-p", "-u"))
    assert loaded_images(h, "crash") is None
    quiet_ok(h.kexec_lu("-u", "--load-live-update"))
    assert loaded_images(h, "liveupdate") is None
    quiet_ok(h.kexec_lu("--unload"))                          # nothing loaded: not an error


def test_unload_then_load_in_one_command(host, sim_images):
    quiet_ok(host.kexec_lu("--load-live-update", sim_images["4.18"]))
    first = loaded_images(host, "liveupdate")
    quiet_ok(host.kexec_lu("-u", "--load-live-update", sim_images["4.19"]))
    again = loaded_images(host, "liveupdate")
    assert again is not None and again["sha256"] != first["sha256"]


# --------------------------------------------------------------- -e and --exec-live-update

def test_exec_of_a_default_image_is_a_reboot_and_is_refused(host, sim_images):
    before = host.toolstack("info")
    one_line_error(host.kexec_lu("-e"), "kexec-lu", "nothing has been loaded", "default")
    quiet_ok(host.kexec_lu("-l", sim_images["4.19"]))
    one_line_error(host.kexec_lu("--exec"), "kexec-lu", "reboot", "--exec-live-update")
    after = host.toolstack("info")
    assert (after["pid"], after["incarnation"], after["xen_version"]) == \
        (before["pid"], before["incarnation"], before["xen_version"])
    assert loaded_images(host, "default") is not None


def test_exec_live_update_performs_the_live_update(host, sim_images):
    before = host.toolstack("info")
    assert before["xen_version"] == "4.18.0"
    quiet_ok(host.kexec_lu("--load-live-update", "--reuse-cmdline", sim_images["4.19"]))
    assert status_codes(host, "-S", "--load-live-update") == 1
    quiet_ok(host.kexec_lu("--exec-live-update"))
    after = host.toolstack("info")
    assert after["xen_version"] == "4.19.0"
    assert after["pid"] == before["pid"] and after["incarnation"] != before["incarnation"]
    assert host.toolstack("lu-report")["state"] == "complete"
    assert status_codes(host, "-S", "--load-live-update") == 0
    assert host.toolstack("verify")["ok"]
    # Both spellings report the same when there is nothing to execute.
    sub = host.kexec_lu("exec")
    classic = host.kexec_lu("--exec-live-update")
    assert classic.returncode == sub.returncode == 1
    assert one_line_error(classic, "kexec-lu", "no live-update image") == sub.stderr.strip()


def test_exec_live_update_with_debug_shows_the_progress_on_stderr(host, sim_images):
    quiet_ok(host.kexec_lu("--load-live-update", sim_images["4.19"]))
    res = host.kexec_lu("--exec-live-update", "-d")
    assert res.returncode == 0 and res.stdout == "", res
    assert "restore-pass2" in res.stderr
    assert "complete: Xen 4.18.0 -> 4.19.0" in res.stderr
    assert host.toolstack("info")["xen_version"] == "4.19.0"


def test_the_subcommands_are_untouched(host, sim_images):
    """Routing only takes a leading classic option; subcommands parse as before."""
    res = host.kexec_lu("load", "--type", "liveupdate", sim_images["4.19"])
    assert res.returncode == 0 and "result:" in res.stdout, res
    res = host.kexec_lu("status")
    assert res.returncode == 1 and res.stdout == "liveupdate image loaded\n", res
    res = run_cli("kexec-lu", "nosuch")
    one_line_error(res, "kexec-lu", "nosuch")


@pytest.mark.parametrize("argv, classic", [
    (["-l", "x.gz"], True),
    (["x.gz", "--load-live-update"], True),          # the image first, as getopt allows
    (["-d", "--exec-live-update"], True),
    (["-l", "-h"], True),                            # -h with a classic option: classic help
    (["-h"], False), (["--help"], False), (["-v"], False), (["--version"], False),
    (["-h", "load"], False),
    (["load", "--type", "liveupdate", "x.gz"], False),
    (["status", "-t", "crash"], False),
    (["lod", "-t", "liveupdate", "x.gz"], False),    # a mistyped subcommand stays the group's error
    ([], False),
])
def test_routing(argv, classic):
    from kexec_lu.cli import cli
    assert compat.is_classic(argv, cli.commands) is classic
