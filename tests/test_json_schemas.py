"""Every --json output of kexec-lu and hyperv-sim, produced for real on a
simulated host, validates against its JSON Schema in schemas/; the schemas
themselves are valid draft 2020-12 and document every field.

One host serves the whole module (boot, guests, ranges, loads, an aborted,
a complete and a refused live update); a second one is halted on purpose,
then recovered.
"""
import copy
import json

import click
import pytest
from jsonschema import Draft202012Validator

from helpers import REPO, Host, boot_host, run_cli, stop_host

SCHEMAS = REPO / "schemas"
SCHEMA_FILES = sorted(SCHEMAS.glob("*.schema.json"))
DRAFT = "https://json-schema.org/draft/2020-12/schema"
HOST_CMDLINE = "liveupdate=64M dom0_mem=256M crashkernel=32M"


def schema_name(path):
    return path.name[:-len(".schema.json")]


def load_schema(name):
    return json.loads((SCHEMAS / ("%s.schema.json" % name)).read_text())


def errors(name, doc):
    return sorted(Draft202012Validator(load_schema(name)).iter_errors(doc),
                  key=lambda e: list(e.absolute_path))


# --------------------------------------------------------------- the schemas

def test_there_are_schemas():
    assert len(SCHEMA_FILES) >= 12, SCHEMA_FILES


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=schema_name)
def test_schema_is_valid_draft_2020_12(path):
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT
    assert schema["$id"] == "urn:kexec-lu:schema:%s" % schema_name(path)
    assert schema["title"] and schema["description"]
    # Every internal reference resolves.
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/"), ref
        assert ref[len("#/$defs/"):] in schema.get("$defs", {}), ref


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


# Keywords whose subschemas only constrain what the documented properties
# already describe.
CONSTRAINTS = ("allOf", "oneOf", "if", "then", "else", "not")


def _undocumented(node, where):
    """Paths of properties (and $defs) that have no description."""
    if not isinstance(node, dict):
        return []
    out = []
    for name, sub in node.get("properties", {}).items():
        if sub is not False and "description" not in sub:
            out.append("%s.%s" % (where, name))
        out += _undocumented(sub, "%s.%s" % (where, name))
    for name, sub in node.get("$defs", {}).items():
        if "description" not in sub:
            out.append("$defs.%s" % name)
        out += _undocumented(sub, "$defs.%s" % name)
    for key in ("items", "additionalProperties", "unevaluatedProperties"):
        if isinstance(node.get(key), dict):
            out += _undocumented(node[key], "%s[%s]" % (where, key))
    for key in ("prefixItems", "anyOf"):
        for i, sub in enumerate(node.get(key, [])):
            out += _undocumented(sub, "%s[%s %d]" % (where, key, i))
    return out


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=schema_name)
def test_every_field_is_described(path):
    schema = json.loads(path.read_text())
    assert _undocumented(schema, "") == []


def test_definitions_shared_between_schemas_are_identical():
    """Each file stands alone; a definition two files share must not drift."""
    seen = {}
    for path in SCHEMA_FILES:
        for name, sub in json.loads(path.read_text()).get("$defs", {}).items():
            if name in seen:
                assert sub == seen[name][1], "$defs/%s differs between %s and %s" % (
                    name, seen[name][0], path.name)
            else:
                seen[name] = (path.name, sub)


def _json_commands(group, prog, path=()):
    """Schema names for every command option that prints JSON."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _json_commands(command, prog, path + (name,))
            continue
        for p in command.params:
            if not isinstance(p, click.Option):
                continue
            if p.name == "as_json":
                yield "-".join((prog,) + path + (name,))
            elif "JSON" in (p.help or ""):
                yield "-".join((prog,) + path + (name, p.opts[-1].lstrip("-")))


def test_every_json_output_has_a_schema_and_every_schema_an_output():
    from hyperv_sim.cli import cli as hyperv_sim_cli
    from kexec_lu.cli import cli as kexec_lu_cli
    wanted = set(_json_commands(kexec_lu_cli, "kexec-lu")) | set(_json_commands(hyperv_sim_cli, "hyperv-sim"))
    assert "hyperv-sim-list-long" in wanted and "kexec-lu-exec" in wanted
    assert wanted == {schema_name(p) for p in SCHEMA_FILES}


# --------------------------------------------------------------- real outputs

class Outputs:
    """Documents by schema name: [(label, document)]."""

    def __init__(self):
        self.docs = {}

    def add(self, name, label, res, rc=0):
        assert res.returncode == rc, (label, res)
        doc = json.loads(res.stdout)
        self.docs.setdefault(name, []).append((label, doc))
        return doc


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, sim_images, xen_artifacts):
    from hyperv_sim.mkimage import write_image
    d = tmp_path_factory.mktemp("schemas")
    state = d / "host"
    out = Outputs()
    res = run_cli("hyperv-sim", "boot", "--json", "--memory", "2G", "--cmdline", HOST_CMDLINE,
                  sim_images["4.18"], state_dir=state)
    try:
        out.add("hyperv-sim-boot", "boot", res)
        _session(out, Host(state), d, sim_images, xen_artifacts, write_image)
    finally:
        stop_host(state)
    return out.docs


def _session(out, host, d, sim_images, xen_artifacts, write_image):
    hs, kl = host.hyperv_sim, host.kexec_lu
    img19 = sim_images["4.19"]

    # Domains in every state: running, paused, dying.
    out.add("hyperv-sim-create", "create hvm", hs("create", "--json", "--type", "hvm",
                                                  "--memory", "128", "g-hvm"))
    out.add("hyperv-sim-create", "create pv", hs(
        "create", "--json", "--type", "pv", "--memory", "64", "--event-channel-abi", "fifo",
        "--grant-version", "2", "--workload", "idle", "g-pv"))
    out.add("hyperv-sim-create", "create pvh", hs("create", "--json", "--type", "pvh",
                                                  "--memory", "64", "g-dying"))
    assert hs("pause", "g-pv").returncode == 0
    assert hs("destroy", "--no-detach", "g-dying").returncode == 0
    doms = out.add("hyperv-sim-list", "list", hs("list", "--json"))
    assert sorted(x["state"] for x in doms) == ["dying", "paused", "running", "running"]
    out.add("hyperv-sim-list", "list one", hs("list", "g-hvm", "--json"))
    out.add("hyperv-sim-list-long", "list -l", hs("list", "-l"))
    out.add("hyperv-sim-list-long", "list -l one", hs("list", "-l", "g-pv"))
    out.add("hyperv-sim-verify", "verify", hs("verify", "--json"))
    out.add("hyperv-sim-info", "info", hs("info", "--json"))
    stream = d / "saved.stream"
    assert hs("stream", "save", "-o", stream).returncode == 0
    out.add("hyperv-sim-stream-dump", "stream dump FILE", hs("stream", "dump", "--json", stream))

    # Images: simulator-built variants and the real Debian Xen.
    variants = {"4.19": img19}
    for label, kw in (("elf64 plain", dict(elf_class=64, gzip=False)),
                      ("not relocatable", dict(relocatable=False)),
                      ("no live update", dict(lu=False)),
                      ("no personality", dict(personality=False))):
        variants[label] = d / ("%s.img" % label.replace(" ", "-"))
        write_image(str(variants[label]), xen_version="4.20.1", **kw)
    variants["real xen.gz"] = xen_artifacts.xen_gz
    variants["real xen-syms"] = xen_artifacts.xen_syms
    for label, path in variants.items():
        out.add("kexec-lu-info", "info " + label, kl("info", "--json", path))

    out.add("kexec-lu-ranges", "ranges", kl("ranges", "--json"))
    out.add("kexec-lu-check", "check, nothing loaded", kl("check", "--json"), rc=1)
    for t in ("liveupdate", "default", "crash"):
        out.add("kexec-lu-load", "load --dry-run " + t,
                kl("load", "--type", t, "--dry-run", "--json", img19))
    out.add("kexec-lu-load", "load crash", kl("load", "--type", "crash", "--json", img19))
    out.add("kexec-lu-load", "load liveupdate", kl("load", "--type", "liveupdate", "--json",
                                                   "--append", "console=com1", img19))
    out.add("kexec-lu-status", "status loaded", kl("status", "--json"), rc=1)
    out.add("kexec-lu-status", "status not loaded", kl("status", "--type", "default", "--json"))
    out.add("kexec-lu-map", "map", kl("map", "--json"))
    out.add("kexec-lu-map", "map IMAGE", kl("map", "--json", img19))
    out.add("kexec-lu-check", "check, ready", kl("check", "--json"))
    out.add("kexec-lu-check", "exec --dry-run", kl("exec", "--dry-run", "--json"))
    info = out.add("hyperv-sim-info", "info, images loaded", hs("info", "--json"))
    assert info["kexec"]["liveupdate"] and info["kexec"]["crash"]

    # Live updates: aborted (the image stays loaded), complete, refused.
    host.toolstack("lu-fault", point="image-check")
    rep = out.add("kexec-lu-exec", "exec aborted", kl("exec", "--json"), rc=1)
    assert rep["state"] == "aborted"
    out.add("hyperv-sim-info", "info after an abort", hs("info", "--json"))
    rep = out.add("kexec-lu-exec", "exec complete", kl("exec", "--json"))
    assert rep["state"] == "complete"
    out.add("hyperv-sim-info", "info after an update", hs("info", "--json"))
    out.add("hyperv-sim-list-long", "list -l after an update", hs("list", "-l"))
    out.add("hyperv-sim-list", "list after an update", hs("list", "--json"))
    out.add("hyperv-sim-verify", "verify after an update", hs("verify", "--json"))
    res = kl("exec", "--json")
    assert res.returncode == 1 and res.stdout == "" and "refused" in res.stderr, res
    info = out.add("hyperv-sim-info", "info after a refusal", hs("info", "--json"))
    assert info["live_update"]["state"] == "refused"
    rows = out.add("hyperv-sim-history", "history", hs("history", "--json"))
    assert [r["outcome"] for r in rows] == ["aborted", "complete", "refused"]


SCHEMA_NAMES = [schema_name(p) for p in SCHEMA_FILES]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_real_outputs_validate(outputs, halted_outputs, name):
    docs = outputs.get(name, []) + halted_outputs.get(name, [])
    assert docs, "no output of %s was produced" % name
    bad = ["%s: %s: %s" % (label, "/".join(map(str, e.absolute_path)), e.message[:300])
           for label, doc in docs for e in errors(name, doc)]
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def halted_outputs(tmp_path_factory, sim_images):
    """xen#2 fails after the point of no return: exec reports halted and the
    stream it could not restore is there to dump."""
    state = tmp_path_factory.mktemp("halted") / "host"
    host = boot_host(state, sim_images["4.18"])
    out = Outputs()
    try:
        assert host.hyperv_sim("create", "--type", "hvm", "--memory", "128", "g1").returncode == 0
        res = host.kexec_lu("load", "--type", "liveupdate", "--append", "lu_fault=restore-pass1",
                            sim_images["4.19"])
        assert res.returncode == 0, res
        rep = out.add("kexec-lu-exec", "exec halted", host.kexec_lu("exec", "--json"), rc=1)
        assert rep["state"] == "halted"
        rows = out.add("hyperv-sim-stream-dump", "stream dump (halted)",
                       host.hyperv_sim("stream", "dump", "--json"))
        assert sum(r["what"] == "LU_DOMAIN" for r in rows) == 2
        from hyperv_sim.cli import cli
        if "recover" in cli.commands:
            out.add("hyperv-sim-recover", "recover", host.hyperv_sim(
                "recover", "--json", "--image", sim_images["4.19"]))
            info = out.add("hyperv-sim-info", "info after a recovery",
                           host.hyperv_sim("info", "--json"))
            assert info["live_update"]["state"] == "complete"
            rows = out.add("hyperv-sim-history", "history after a recovery",
                           host.hyperv_sim("history", "--json"))
            assert [r["outcome"] for r in rows] == ["halted", "recover", "complete"]
    finally:
        stop_host(state)
    return out.docs


def test_exec_on_real_xen_reports_triggered():
    """On real Xen there is no report to follow: what exec --json prints then."""
    from kexec_lu.liveupdate import run_live_update

    class Transport:
        has_reports = False

    class Client:
        transport = Transport()

        def kexec_status(self, ktype):
            return 0

        def kexec_exec(self, ktype):
            self.executed = ktype

    rep = run_live_update(Client())
    assert rep["state"] == "triggered"
    assert errors("kexec-lu-exec", rep) == []


def test_outputs_cover_every_state(outputs, halted_outputs):
    states = {d["state"] for _, d in outputs["kexec-lu-exec"] + halted_outputs["kexec-lu-exec"]}
    assert states == {"aborted", "complete", "halted"}
    lu = {d["live_update"]["state"] for _, d in outputs["hyperv-sim-info"] if d["live_update"]}
    assert lu == {"aborted", "complete", "refused"}
    kinds = {d["placement"]["kind"] for _, d in outputs["kexec-lu-load"]}
    assert kinds == {"liveupdate", "default", "crash"}


# --------------------------------------------------------------- the schemas bite

def _first(outputs, name, label):
    return copy.deepcopy(dict(outputs[name])[label])


def _set(path, value):
    def mutate(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return doc
    return mutate


def _delete(path):
    def mutate(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return doc
    return mutate


MUTATIONS = [
    # (schema, output label, mutation, what it breaks)
    ("kexec-lu-status", "status loaded", _set(["loaded"], "yes"), "a boolean as a string"),
    ("kexec-lu-status", "status loaded", _set(["extra"], 1), "an undocumented key"),
    ("kexec-lu-ranges", "ranges", _set([1, "start"], "0xffc00000"), "an address as a hex string"),
    ("kexec-lu-ranges", "ranges", _set([1, "range"], 7), "a range number that is not its name's"),
    ("kexec-lu-info", "info 4.19", _set(["relocatable"], None), "alignment without a relocatable tag"),
    ("kexec-lu-info", "info 4.19", _set(["multiboot2", "tags", 0, "name"], "relocatable"),
     "a tag whose fields do not match its name"),
    ("kexec-lu-load", "load liveupdate", _set(["placement", "bootmem_start"], None),
     "a live-update placement without its LU bootmem"),
    ("kexec-lu-load", "load --dry-run default", _set(["segments", 0, "dest"], 4097),
     "a segment that is not page-aligned"),
    ("kexec-lu-exec", "exec complete", _set(["state"], "done"), "an unknown state"),
    ("kexec-lu-exec", "exec complete", _set(["phases", 0, "name"], "warp"), "an unknown phase"),
    ("kexec-lu-exec", "exec complete", _set(["guest_bytes_written"], 0),
     "a xen#1 key in xen#2's report"),
    ("kexec-lu-exec", "exec aborted", _set(["error"], None), "an abort without a reason"),
    ("kexec-lu-exec", "exec aborted", _set(["state"], "refused"), "a state exec never prints"),
    ("hyperv-sim-list", "list", _set([1, "state"], "sleeping"), "an unknown domain state"),
    ("hyperv-sim-list", "list", _set([1, "memory"], 1.5e8), "memory as a float"),
    ("hyperv-sim-create", "create hvm", _delete(["vcpus"]), "a missing key"),
    ("hyperv-sim-list-long", "list -l", _set(["domains", 0, "surprise"], True),
     "an undocumented key in a domain's details"),
    ("hyperv-sim-list-long", "list -l", _set(["domains", 0, "vcpu_states", 0, "runstate"], "?"),
     "an unknown run state"),
    ("hyperv-sim-verify", "verify", _set(["problems"], [{"domid": 1, "check": "memory",
                                                          "detail": "x"}]),
     "ok with problems"),
    ("hyperv-sim-info", "info after an update", _set(["kexec", "crash"], {
        "type": "liveupdate", "arch": 62, "entry": 0, "sha256": "0" * 64,
        "segments": [{"dest": 0, "dest_size": 4096, "buf_size": 1, "staged": True,
                      "mapped_only": False}]}),
     "an image filed under the wrong type"),
    ("hyperv-sim-info", "info", _set(["frames", "mystery"], 3), "an unknown frame use"),
    ("hyperv-sim-boot", "boot", _set(["memory"], 100), "less RAM than a host can have"),
    ("hyperv-sim-stream-dump", "stream dump FILE", _delete([1, "type"]),
     "a record without its type"),
    ("kexec-lu-map", "map IMAGE", _set(["regions", 0, "kind"], "guest"),
     "a named range of the wrong kind"),
]


@pytest.mark.parametrize("name, label, mutate, why", MUTATIONS,
                         ids=["%s: %s" % (m[0], m[3]) for m in MUTATIONS])
def test_schema_rejects_a_broken_document(outputs, name, label, mutate, why):
    doc = _first(outputs, name, label)
    assert errors(name, doc) == [], "the unbroken document must validate"
    assert errors(name, mutate(doc)), "the schema accepted %s" % why
