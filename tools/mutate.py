"""`make mutate`: mutation testing of the modules that decide correctness.

Each module of MODULES is mutated one change at a time by cosmic-ray (from
PyPI), in a venv of its own (.mutate/venv) where the package is installed
as a user installs it: the mutated file is the installed one, so the
hypervisor processes the tests start run the mutant too.  For each mutant
the module's tests run until the first failure; a mutant no test fails
"survives".  A survivor listed in tools/mutate-equivalent.tsv (module,
operator, function, the line as the mutant has it, why) is an equivalent
mutant, a change no behaviour can show, and does not count.  C mutants
(tools/mutate-c.tsv) are applied to a copy of the tree, built into the same
venv and tested inside the copy.

Writes mutate/results/latest.{md,json}; exits 1 if a module scores under
TARGET.  `--modules a,b` runs a subset (names as in MODULES).
"""
import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
WORK = REPO / ".mutate"
VENV = WORK / "venv"
RESULTS = REPO / "mutate" / "results"
EQUIVALENT = REPO / "tools" / "mutate-equivalent.tsv"
C_MUTANTS = REPO / "tools" / "mutate-c.tsv"
TARGET = 0.90
MIN_TIMEOUT = 60          # seconds a mutant's tests may take, at least (10 x baseline)

# module (as installed) -> the tests that decide it, fastest first.
MODULES = {
    "window": ("kexec_lu/window.py",
               ["tests/test_window_oracle.py", "tests/test_window.py", "tests/test_loader.py"]),
    "abi": ("xen_public/abi.py", ["tests/test_abi_layout.py", "tests/test_breadcrumb.py"]),
    "multiboot2": ("xen_public/multiboot2.py", ["tests/test_multiboot2.py", "tests/test_image.py"]),
    "image": ("kexec_lu/image.py", ["tests/test_image_edges.py", "tests/test_image.py", "tests/test_multiboot2.py",
                                    "tests/test_debian_xen.py::test_recorded_facts_are_what_binutils_reads"]),
    "lustream": ("xen_public/lustream.py", ["tests/test_stream.py", "tests/test_image.py"]),
    "stream": ("hyperv_sim/liveupdate/stream.py",
               ["tests/test_stream.py", "tests/test_breadcrumb.py"]),
    "records": ("xen_public/lurecords.py", ["tests/test_lurecords.py", "tests/test_stream.py"]),
    "mapped": ("hyperv_sim/liveupdate/mapped.py", ["tests/test_mapped.py", "tests/test_restore_refusals.py"]),
    "check": ("hyperv_sim/liveupdate/check.py",
              ["tests/test_stream.py", "tests/test_restore_refusals.py"]),
    "verify": ("hyperv_sim/verify.py", ["tests/test_verify_table.py", "tests/test_domains.py"]),
}

# A selective set (relational, arithmetic, logical, constant and control-flow
# changes), not every operator for every operator: the rest mostly repeats these.
OPERATORS = [
    r"core/ReplaceComparisonOperator_(Lt_LtE|Lt_GtE|LtE_Lt|LtE_Gt|Gt_GtE|Gt_LtE|GtE_Gt|GtE_Lt"
    r"|Eq_NotEq|NotEq_Eq|Is_IsNot|IsNot_Is|In_NotIn|NotIn_In)",
    r"core/ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_FloorDiv|FloorDiv_Mul|Mod_FloorDiv"
    r"|BitAnd_BitOr|BitOr_BitAnd|BitXor_BitOr|LShift_RShift|RShift_LShift)",
    r"core/ReplaceUnaryOperator_(Delete_Not|Delete_USub|Delete_Invert)",
    r"core/(AddNot|ReplaceTrueWithFalse|ReplaceFalseWithTrue|ReplaceAndWithOr|ReplaceOrWithAnd"
    r"|ReplaceBreakWithContinue|ReplaceContinueWithBreak|NumberReplacer|ZeroIterationForLoop"
    r"|ExceptionReplacer)",
]


class BaselineFailed(Exception):
    pass


def run(*argv, **kw):
    kw.setdefault("check", True)
    return subprocess.run([str(a) for a in argv], **kw)


def site_packages():
    return pathlib.Path(run(VENV / "bin" / "python", "-c",
                            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                            capture_output=True, text=True).stdout.strip())


def install(source=REPO):
    """The package as `pip install .` installs it (test extras and cosmic-ray
    beside it the first time); later calls put back the code of `source`."""
    build = pathlib.Path(source) / "build"
    shutil.rmtree(build, ignore_errors=True)
    if not (VENV / "bin" / "python").exists():
        run(sys.executable, "-m", "venv", VENV)
        run(VENV / "bin" / "python", "-m", "pip", "install", "-q", "setuptools", "wheel", "cffi",
            "cosmic-ray>=8.3")
        run(VENV / "bin" / "python", "-m", "pip", "install", "-q", "--no-build-isolation",
            "%s[test]" % source)
    else:
        run(VENV / "bin" / "python", "-m", "pip", "install", "-q", "--no-build-isolation",
            "--force-reinstall", "--no-deps", str(source))
    shutil.rmtree(build, ignore_errors=True)


def test_script(module_file, tests):
    """What cosmic-ray runs per mutant: stale byte code of the mutated
    package goes first (a mutant of the same size written in the same second
    would otherwise run the previous one), then the tests, stopping at the
    first failure."""
    pkg = module_file.parent
    while (pkg.parent / "__init__.py").exists():
        pkg = pkg.parent
    script = WORK / ("run-%s.sh" % module_file.stem)
    script.write_text("#!/bin/sh\nfind '%s' -name __pycache__ -prune -exec rm -rf {} +\n"
                      "cd '%s' && exec '%s' -m pytest -x -q -p no:cacheprovider %s\n"
                      % (pkg, REPO, VENV / "bin" / "python", " ".join(tests)))
    script.chmod(0o755)
    return script


def operators_to_exclude():
    names = run(VENV / "bin" / "cosmic-ray", "operators", capture_output=True,
                text=True).stdout.split()
    keep = [re.compile(p + "$") for p in OPERATORS]
    return ["^%s$" % re.escape(n) for n in names if not any(k.match(n) for k in keep)]


def mutate_module(name):
    rel, tests = MODULES[name]
    target = site_packages() / rel
    d = WORK / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    script = test_script(target, tests)
    config, session = d / "config.toml", d / "session.sqlite"
    started = time.monotonic()
    proc = run(script, capture_output=True, text=True, check=False)
    baseline = time.monotonic() - started
    if proc.returncode:                                  # the unmutated module must pass
        raise BaselineFailed("%s: its tests fail before any mutation:\n%s"
                             % (name, proc.stdout[-2000:]))
    excluded = operators_to_exclude()
    config.write_text(
        "[cosmic-ray]\nmodule-path = %s\ntimeout = %.1f\nexcluded-modules = []\n"
        "test-command = %s\n\n[cosmic-ray.distributor]\nname = \"local\"\n\n"
        "[cosmic-ray.filters.operators-filter]\nexclude-operators = %s\n"
        % (json.dumps(str(target)), max(MIN_TIMEOUT, 10 * baseline), json.dumps(str(script)),
           json.dumps(excluded)))
    cr = VENV / "bin"
    run(cr / "cosmic-ray", "init", config, session)
    run(cr / "cr-filter-operators", session, config, capture_output=True)
    run(cr / "cr-filter-pragma", session, capture_output=True)
    run(cr / "cosmic-ray", "exec", config, session)
    dump = run(cr / "cosmic-ray", "dump", session, capture_output=True, text=True).stdout
    return target, [json.loads(line) for line in dump.splitlines() if line.strip()]


def mutated_line(diff):
    """The line as the mutant has it (the diff's first added line), stripped."""
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            return line[1:].strip()
    return ""


def load_equivalent():
    """{(module, operator, function, the mutated line, stripped): why}"""
    out = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                module, operator, function, text, why = line.split("\t")
                out[(module, operator, function, text.strip())] = why
    return out


def classify(name, target, items, equivalent):
    source = target.read_text().splitlines()
    rows = {"killed": 0, "survived": [], "equivalent": [], "incompetent": 0, "skipped": 0}
    for work_item, result in items:
        if result is None:
            rows["skipped"] += 1
            continue
        outcome = result.get("test_outcome")
        if result.get("worker_outcome") not in ("normal", "exception", "abnormal", "timeout"):
            rows["skipped"] += 1
            continue
        if outcome == "killed" or result.get("worker_outcome") == "timeout":
            rows["killed"] += 1
            continue
        if outcome == "incompetent":
            rows["incompetent"] += 1
            continue
        mut = work_item["mutations"][0]
        line_no = mut["start_pos"][0]
        text = source[line_no - 1].strip()
        diff = result.get("diff", "")
        entry = {"line": line_no, "operator": mut["operator_name"], "occurrence": mut["occurrence"],
                 "function": mut.get("definition_name") or "", "source": text,
                 "mutant": mutated_line(diff), "diff": diff}
        why = equivalent.get((name, mut["operator_name"], entry["function"], entry["mutant"]))
        if why:
            entry["why"] = why
            rows["equivalent"].append(entry)
        else:
            rows["survived"].append(entry)
    counted = rows["killed"] + len(rows["survived"])
    rows["score"] = rows["killed"] / counted if counted else 1.0
    return rows


def c_mutants():
    """[(file, original, mutant, tests, why it matters)] from tools/mutate-c.tsv."""
    out = []
    if C_MUTANTS.exists():
        for line in C_MUTANTS.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                out.append(tuple(line.split("\t")))
    return out


def run_c_mutants():
    """Each C mutant: a copy of the tree with one change, installed into the
    venv, its tests run; the venv gets the true code back afterwards."""
    results = []
    for path, original, mutant, tests, what in c_mutants():
        copy = WORK / "c-tree"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".mutate", ".cache", "build", "*.egg-info", "__pycache__"))
        src = (copy / path).read_text()
        if src.count(original) != 1:
            results.append({"file": path, "what": what, "outcome": "stale (original not found once)"})
            continue
        (copy / path).write_text(src.replace(original, mutant))
        install(copy)
        # In the copy: tests that build csrc/ themselves (the ASan harness) see the mutant too.
        proc = run(VENV / "bin" / "python", "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   *tests.split(), cwd=copy, check=False, capture_output=True, text=True)
        results.append({"file": path, "what": what, "original": original, "mutant": mutant,
                        "outcome": "killed" if proc.returncode else "survived"})
    if results:
        install()
    return results


def report(modules, c_results, started):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps({"modules": modules, "c": c_results},
                                                    indent=2) + "\n")
    lines = ["# make mutate", "", "Run %s, %.0f min, target %d %% killed per module." % (
        time.strftime("%Y-%m-%d %H:%M"), (time.monotonic() - started) / 60, TARGET * 100), "",
        "| module | mutants | killed | survived | equivalent | incompetent | score |",
        "|---|---|---|---|---|---|---|"]
    for name, r in modules.items():
        lines.append("| %s | %d | %d | %d | %d | %d | %.1f %% |" % (
            name, r["killed"] + len(r["survived"]) + len(r["equivalent"]) + r["incompetent"],
            r["killed"], len(r["survived"]), len(r["equivalent"]), r["incompetent"],
            100 * r["score"]))
    for name, r in modules.items():
        if r["survived"] or r["equivalent"]:
            lines += ["", "## %s" % name, ""]
        for e in r["survived"]:
            lines.append("- survived: line %d, %s: `%s` -> `%s`" % (
                e["line"], e["operator"], e["source"], e["mutant"]))
        for e in r["equivalent"]:
            lines.append("- equivalent: line %d, %s: `%s` (%s)" % (
                e["line"], e["operator"], e["mutant"], e["why"]))
    if c_results:
        lines += ["", "## C mutants", ""]
        lines += ["- %s: %s: %s" % (c["outcome"], c["file"], c["what"]) for c in c_results]
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", default=",".join(MODULES),
                    help="comma-separated, from: %s" % ", ".join(MODULES))
    ap.add_argument("--no-c", action="store_true", help="skip the C mutants")
    args = ap.parse_args()
    names = [m for m in args.modules.split(",") if m]
    unknown = [m for m in names if m not in MODULES]
    if unknown:
        sys.exit("mutate: unknown module %s (known: %s)" % (", ".join(unknown), ", ".join(MODULES)))
    started = time.monotonic()
    WORK.mkdir(exist_ok=True)
    install()
    equivalent = load_equivalent()
    results = {}
    failed = []
    for name in names:
        try:
            target, items = mutate_module(name)
        except BaselineFailed as e:
            print("mutate: %s" % e, file=sys.stderr)
            failed.append(name)
            continue
        results[name] = classify(name, target, items, equivalent)
        install()                  # whatever cosmic-ray left behind, the true code again
    c_results = [] if args.no_c else run_c_mutants()
    report(results, c_results, started)
    low = failed + [n for n, r in results.items() if r["score"] < TARGET]
    low += [c["file"] for c in c_results if c["outcome"] != "killed"]
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
