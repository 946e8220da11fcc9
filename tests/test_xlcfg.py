"""xl-style domain config files (hyperv_sim.xlcfg): syntax, validation, flags.

Messages are compared whole: each must be the one line a user sees, naming
the file and line.
"""
import pytest
from hypothesis import given, settings, strategies as st

from hyperv_sim.xlcfg import ConfigError, DomainConfig, load_config, merge_flags, parse_config

MiB = 1 << 20

FULL = """\
# A realistic guest; xl would take this file too.
name = "web-01"
builder = 'hvm'            # legacy spelling of type = "hvm"
memory = 2048; vcpus = 4
maxmem = 2048
event_channel_abi = "fifo"
max_grant_version = 2
pci = [ "0000:03:00.0",
        '04:1F.7,permissive=1',   # options after the BDF are ignored
      ]
workload = "idle"
workload_pages = 0x40
workload_rate = "250k"
seed = 0xdeadbeef
on_crash = "restart"
disk = [ 'format=raw, vdev=xvda, target=/srv/web.img' ]
extra = "console=hvc0 root=\\"/dev/xvda1\\"\\n"
"""


def error_of(text, source="guest.cfg"):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source)
    return str(exc.value)


def test_full_config():
    cfg = parse_config(FULL, "guest.cfg")
    assert cfg == DomainConfig(
        name="web-01", type="hvm", memory=2048 * MiB, vcpus=4, event_channel_abi="fifo",
        grant_version=2, pci=["0000:03:00.0", "0000:04:1f.7"], workload="idle",
        workload_pages=64, workload_rate=250000, seed=0xdeadbeef,
        ignored={"on_crash": "restart",
                 "disk": ["format=raw, vdev=xvda, target=/srv/web.img"],
                 "extra": 'console=hvc0 root="/dev/xvda1"\n'})
    assert cfg.to_request() == {
        "name": "web-01", "type": "hvm", "memory": 2048 * MiB, "vcpus": 4,
        "event_channel_abi": "fifo", "grant_version": 2,
        "pci": ["0000:03:00.0", "0000:04:1f.7"], "workload": "idle", "workload_pages": 64,
        "workload_rate": 250000, "seed": 0xdeadbeef}


def test_defaults_and_small_forms():
    assert parse_config('name = "g"') == DomainConfig(name="g")
    assert DomainConfig(name="g").to_request() == {
        "name": "g", "type": "pv", "memory": 512 * MiB, "vcpus": 1,
        "event_channel_abi": "2-level", "grant_version": 1, "pci": [], "workload": "busy",
        "workload_pages": 16, "workload_rate": None, "seed": None}
    cfg = parse_config("name='g';memory=\"1G\";;event_channel_abi='2l';pci=[];seed=0\n\n")
    assert (cfg.memory, cfg.event_channel_abi, cfg.pci, cfg.seed) == (1 << 30, "2-level", [], 0)
    assert parse_config("name='g'\nseed = %d" % (2**64 - 1)).seed == 2**64 - 1
    assert parse_config("name='g'\nmemory=16").memory == 16 * MiB


@pytest.mark.parametrize("text, message", [
    # syntax
    ('name = "g"\nmemory =\n', "guest.cfg:2: expected a value after '='"),
    ('name = "g"\nmemory = 1+1', "guest.cfg:2: expected a new line or ';' after the value "
                                 "of 'memory', found '+' (xl takes no expressions)"),
    ('name = "g"\nmemory = os.system("x")', "guest.cfg:2: expected a value after '=', found "
                                            "bare word 'os.system' (quote strings: \"os.system\")"),
    ("name = guest", "guest.cfg:1: expected a value after '=', found bare word 'guest' "
                     "(quote strings: \"guest\")"),
    ('\n\nname = "g\n', "guest.cfg:3: unterminated string"),
    ("name = 'g\\'", "guest.cfg:1: unterminated string"),
    ('name = "g"\npci = [ "01:00.0",\n  "02:00.0"\n', "guest.cfg:2: unterminated list for "
                                                      "'pci' (no closing ']')"),
    ('pci = [ "01:00.0" "02:00.0" ]', "guest.cfg:1: expected ',' or ']' in the list for 'pci', "
                                      "found a string"),
    ("pci = [ , ]", "guest.cfg:1: expected a list item or ']', found ','"),
    ("pci = [ [1] ]", "guest.cfg:1: lists cannot be nested"),
    ("memory = 1G", "guest.cfg:1: invalid number '1G' (quote a size with a unit: \"1G\")"),
    ("memory = 1.5", "guest.cfg:1: invalid number '1.5'"),
    ("vcpus = 010", "guest.cfg:1: number '010' has a leading zero (xl would read it as octal)"),
    ('name = "a\\qb"', "guest.cfg:1: unknown escape '\\q' in a string (use \\\\ for a backslash)"),
    ('name "g"', "guest.cfg:1: expected '=' after 'name', found a string"),
    ("= 5", "guest.cfg:1: expected a key at the start of a statement, found '='"),
    ('name = "a" "b"', "guest.cfg:1: expected a new line or ';' after the value of 'name', "
                       "found a string"),
    # keys
    ('name = "g"\nmemroy = 512', "guest.cfg:2: unknown key 'memroy' (did you mean 'memory'?)"),
    ("frobnicate = 1", "guest.cfg:1: unknown key 'frobnicate'"),
    ('name = "a"\nname = "b"', "guest.cfg:2: duplicate key 'name' (already set on line 1)"),
    ("vcpus = 2", "guest.cfg: missing required key 'name'"),
    # value types
    ('name = "g"\nvcpus = "2"', "guest.cfg:2: 'vcpus' must be an integer, not a string"),
    ("name = 7", "guest.cfg:1: 'name' must be a string, not an integer"),
    ('name = "g"\npci = "01:00.0"', "guest.cfg:2: 'pci' must be a list, not a string"),
    ('name = "g"\nmemory = [512]', "guest.cfg:2: 'memory' must be an integer (MiB) or a string "
                                   "such as \"1G\", not a list"),
    # values
    ('name = "-g"', "guest.cfg:1: 'name' must be 1 to 64 letters, digits and _.:- starting "
                    "with a letter or digit, not '-g'"),
    ('name = "%s"' % ("a" * 65), "guest.cfg:1: 'name' must be 1 to 64 letters, digits and _.:- "
                                 "starting with a letter or digit, not '%s'" % ("a" * 65)),
    ('name = "g\\n"', "guest.cfg:1: 'name' must be 1 to 64 letters, digits and _.:- starting "
                      "with a letter or digit, not 'g\\n'"),
    ('name = "g"\ntype = "xen"', "guest.cfg:2: 'type' must be \"pv\", \"pvh\" or \"hvm\", "
                                 "not 'xen'"),
    ('name = "g"\nmemory = 8', "guest.cfg:2: 'memory' must be at least 16M, not 8M"),
    ('name = "g"\nmemory = "16777217B"', "guest.cfg:2: 'memory' must be a multiple of 4K, "
                                         "not 16777217B"),
    ('name = "g"\nmemory = "lots"', "guest.cfg:2: 'memory' must be a number of MiB or a size "
                                    "with a unit K, M, G or T (e.g. \"1G\"), not 'lots'"),
    # Sizes are decimal even with a leading zero (never octal).
    ('name = "g"\nmemory = "010M"', "guest.cfg:2: 'memory' must be at least 16M, not 10M"),
    ('name = "g"\nmemory = 1024\nmaxmem = 2048', "guest.cfg:3: 'maxmem' (2G) must equal "
                                                 "'memory' (1G): the simulator has no ballooning"),
    ('name = "g"\nmaxmem = "1G"', "guest.cfg:2: 'maxmem' (1G) must equal 'memory' (512M): "
                                  "the simulator has no ballooning"),
    ('name = "g"\nvcpus = 0', "guest.cfg:2: 'vcpus' must be from 1 to 128, not 0"),
    ('name = "g"\nvcpus = 129', "guest.cfg:2: 'vcpus' must be from 1 to 128, not 129"),
    ('name = "g"\nevent_channel_abi = "3l"', "guest.cfg:2: 'event_channel_abi' must be "
                                             "\"2-level\" or \"fifo\", not '3l'"),
    ('name = "g"\ngrant_version = 3', "guest.cfg:2: 'grant_version' must be from 1 to 2, not 3"),
    ('name = "g"\nworkload = "lazy"', "guest.cfg:2: 'workload' must be \"busy\" or \"idle\", "
                                      "not 'lazy'"),
    ('name = "g"\nworkload_pages = 4097', "guest.cfg:2: 'workload_pages' must be from 1 to "
                                          "4096, not 4097"),
    ('name = "g"\nseed = 0x10000000000000000', "guest.cfg:2: 'seed' must be from 0 to "
                                               "18446744073709551615, not 18446744073709551616"),
])
def test_errors(text, message):
    assert error_of(text) == message


@pytest.mark.parametrize("lines, expected", [
    (['builder = "hvm"'], "hvm"),
    (['builder = "generic"'], "pv"),
    (['builder = "hvm"', 'type = "hvm"'], "hvm"),
    (['type = "pvh"'], "pvh"),
])
def test_builder_and_type(lines, expected):
    assert parse_config("\n".join(['name = "g"'] + lines)).type == expected


def test_builder_and_type_disagree():
    assert error_of('name = "g"\ntype = "pvh"\nbuilder = "generic"') == (
        "guest.cfg:3: 'builder = \"generic\"' means type \"pv\", but 'type' is \"pvh\"")
    assert error_of('name = "g"\nbuilder = "hvm"\n\ntype = "pv"') == (
        "guest.cfg:4: 'builder = \"hvm\"' means type \"hvm\", but 'type' is \"pv\"")
    assert error_of('name = "g"\nbuilder = "linux"') == (
        "guest.cfg:2: 'builder' must be \"hvm\" or \"generic\", not 'linux'")


def test_grant_versions():
    assert parse_config('name = "g"\nmax_grant_version = 2').grant_version == 2
    assert parse_config('name = "g"\ngrant_version = 2\nmax_grant_version = 2').grant_version == 2
    assert error_of('name = "g"\nmax_grant_version = 2\ngrant_version = 1') == (
        "guest.cfg:3: 'grant_version' (1) and 'max_grant_version' (2) disagree")


def test_pci_normalised():
    cfg = parse_config('name = "g"\npci = ["0:0.0", "AB:1f.7", "ffff:ff:1F.7,rdm_policy=relaxed,'
                       ' seize=1"]')
    assert cfg.pci == ["0000:00:00.0", "0000:ab:1f.7", "ffff:ff:1f.7"]


@pytest.mark.parametrize("entry, problem", [
    ("01:00", "is not a PCI device: expected [DDDD:]BB:DD.F in hex, then optional ,key=value"),
    ("0g:00.0", "is not a PCI device: expected [DDDD:]BB:DD.F in hex, then optional ,key=value"),
    ("01:00.0,permissive", "is not a PCI device: expected [DDDD:]BB:DD.F in hex, then optional "
                           ",key=value"),
    ("10000:00:00.0", "PCI domain 0x10000 is out of range (at most 0xffff)"),
    ("100:00.0", "PCI bus 0x100 is out of range (at most 0xff)"),
    ("00:20.0", "PCI device 0x20 is out of range (at most 0x1f)"),
    ("00:1f.8", "PCI function 0x8 is out of range (at most 0x7)"),
])
def test_pci_invalid_names_the_entry_line(entry, problem):
    text = 'name = "g"\npci = [\n  "01:00.0",\n  "%s",\n]' % entry
    assert error_of(text) == "guest.cfg:4: 'pci' entry '%s'%s %s" % (
        entry, "" if problem.startswith("is") else ":", problem)


def test_pci_duplicates_after_normalisation():
    assert error_of('name = "g"\npci = [ "01:00.0",\n "0000:01:00.0,seize=1" ]') == (
        "guest.cfg:3: 'pci' lists 0000:01:00.0 twice")
    assert error_of('name = "g"\npci = [ "01:00.0", 5 ]') == (
        "guest.cfg:2: 'pci' entries must be strings, not an integer")


def test_merge_flags_precedence():
    cfg = parse_config('name = "g"\nmemory = 1024\nvcpus = 4\npci = ["01:00.0"]\nkernel = "/k"')
    merged = merge_flags(cfg, name=None, memory=2 << 30, vcpus=None, type="pvh", seed=0, pci=None)
    assert merged == DomainConfig(name="g", type="pvh", memory=2 << 30, vcpus=4,
                                  pci=["0000:01:00.0"], seed=0, ignored={"kernel": "/k"})
    assert cfg.memory == 1024 * MiB and cfg.type == "pv"        # the original is untouched
    assert merge_flags(cfg, name="other", memory="256M").to_request()["memory"] == 256 * MiB
    assert merge_flags(cfg) == cfg


def test_merge_flags_without_config():
    assert merge_flags(None, name="g", memory=None, vcpus=2, pci=("2:0.1",)) == DomainConfig(
        name="g", vcpus=2, pci=["0000:02:00.1"])
    with pytest.raises(ConfigError, match=r"^no domain name: give one on the command line or "
                                          r'as name = "\.\.\." in a config file$'):
        merge_flags(None, name=None, vcpus=2)


@pytest.mark.parametrize("flags, message", [
    ({"vcpus": 0}, "--vcpus must be from 1 to 128, not 0"),
    ({"vcpus": True}, "--vcpus must be an integer, not bool"),
    ({"memory": 4096}, "--memory must be at least 16M, not 4K"),
    ({"event_channel_abi": "3l"}, "--event-channel-abi must be \"2-level\" or \"fifo\", not '3l'"),
    ({"pci": ["1:0.0", "01:00.0"]}, "--pci lists 0000:01:00.0 twice"),
])
def test_merge_flags_checks_flags(flags, message):
    with pytest.raises(ConfigError) as exc:
        merge_flags(None, name="g", **flags)
    assert str(exc.value) == message


def test_load_config(tmp_path):
    path = tmp_path / "guest.cfg"
    path.write_text('name = "g"\nvcpus = 2\n')
    assert load_config(path) == DomainConfig(name="g", vcpus=2)
    path.write_text('name = "g"\nvcpus = 200\n')
    with pytest.raises(ConfigError, match=r"^%s:2: 'vcpus' must be from 1 to 128, not 200$"
                       % str(path).replace(".", r"\.")):
        load_config(str(path))
    missing = tmp_path / "nope.cfg"
    with pytest.raises(ConfigError) as exc:
        load_config(missing)
    assert str(exc.value) == "cannot read config file %s: No such file or directory" % missing


FRAGMENTS = ["name", "memory", "pci", "vcpus", "seed", "builder", " = ", "=", "[", "]", ",", ";",
             "\n", "#", '"', "'", "\\", "0x", "1", "0", "G", '"g"', "'01:00.0'", "+", "(", " "]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)))
                 .map("".join)))
def test_any_text_gives_a_config_or_one_line_config_error(text):
    try:
        assert isinstance(parse_config(text, "f.cfg"), DomainConfig)
    except ConfigError as e:
        assert str(e).startswith("f.cfg") and "\n" not in str(e)


def test_a_create_operand_is_a_config_file_when_it_looks_like_one(tmp_path, monkeypatch):
    """As `xl create FILE`: an existing file, a path, or *.cfg; any other
    word is a domain name."""
    from hyperv_sim.xlcfg import looks_like_config
    monkeypatch.chdir(tmp_path)
    (tmp_path / "web").write_text('name = "web"')
    assert [looks_like_config(w) for w in ("web", "./db", "db.cfg", "/etc/xen/db", "db", "db.cfgx")] == \
        [True, True, True, True, False, False]
