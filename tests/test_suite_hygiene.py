"""The test suite's own shape, so that its helpers stay in one place.

helpers.py holds every shared helper that is not a fixture; conftest.py
holds only fixtures and pytest hooks, and no test module imports it; a name
helpers.py defines is not defined again in another test module (a second
copy drifts from the first); one fixture name means one fixture.
"""
import ast
import pathlib

import helpers

TESTS = pathlib.Path(helpers.__file__).resolve().parent
HELPERS = TESTS / "helpers.py"
CONFTEST = TESTS / "conftest.py"
MODULES = sorted(p for p in TESTS.rglob("*.py") if p != HELPERS)


def parse(path):
    return ast.parse(path.read_text(), str(path))


def where(path, node):
    return "%s:%d" % (path.relative_to(TESTS), node.lineno)


def is_fixture(fn):
    """Decorated with pytest.fixture, bare or called."""
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
        if isinstance(target, ast.Name) and target.id == "fixture":
            return True
    return False


def helper_names():
    """What helpers.py defines at module level: (functions, classes,
    constants, public methods of its classes)."""
    functions, classes, constants, methods = set(), set(), set(), set()
    for node in parse(HELPERS).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.add(node.name)
        elif isinstance(node, ast.ClassDef):
            classes.add(node.name)
            methods |= {m.name for m in node.body
                        if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and not m.name.startswith("_")}
        elif isinstance(node, ast.Assign):
            constants |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return functions, classes, constants, methods


def imports_of_conftest(tree):
    """Every import of the conftest module in a module: a plain import, a
    from-import, or one through import_module() or __import__()."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(a.name.split(".")[0] == "conftest" for a in node.names):
                yield node
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] == "conftest":
                yield node
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in ("import_module", "__import__") and node.args and \
                    isinstance(node.args[0], ast.Constant) and node.args[0].value == "conftest":
                yield node


def test_the_helpers_module_has_the_shared_helpers():
    functions, classes, constants, methods = helper_names()
    assert {"REPO", "installed_command", "run_cli", "CliResult", "Host", "boot_host",
            "stop_host", "make_hypervisor", "full_state", "assert_restored_whole",
            "one_line_error", "wait_for", "wait_steps"} <= functions | classes | constants
    assert "load_lu" in methods


def test_no_test_module_imports_conftest():
    found = [where(path, node) for path in MODULES for node in imports_of_conftest(parse(path))]
    found += [where(HELPERS, node) for node in imports_of_conftest(parse(HELPERS))]
    assert not found, "import these from helpers, not conftest: %s" % ", ".join(found)


def test_no_helper_is_defined_again():
    functions, classes, constants, methods = helper_names()
    found = []
    for path in MODULES:
        tree = parse(path)
        in_class = {id(m) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for m in c.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # A method may share a name with a helper (a fake's own
                # toolstack, say); a function may not.
                if node.name in functions or (id(node) not in in_class and node.name in methods):
                    found.append("%s def %s" % (where(path, node), node.name))
            elif isinstance(node, ast.ClassDef) and node.name in classes:
                found.append("%s class %s" % (where(path, node), node.name))
        for node in tree.body:
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id in constants:
                        found.append("%s %s =" % (where(path, node), t.id))
    assert not found, "defined in helpers.py already, use that one: %s" % ", ".join(found)


def test_conftest_holds_only_fixtures_and_hooks():
    others = []
    for node in parse(CONFTEST).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not (is_fixture(node) or node.name.startswith("pytest_")):
                others.append("%s def %s" % (where(CONFTEST, node), node.name))
        elif not isinstance(node, (ast.Import, ast.ImportFrom)) and not (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            others.append("%s %s" % (where(CONFTEST, node), type(node).__name__))
    assert not others, "move to helpers.py: %s" % ", ".join(others)


def test_helpers_holds_no_fixtures():
    fixtures = [where(HELPERS, node) for node in ast.walk(parse(HELPERS))
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and is_fixture(node)]
    assert not fixtures, "fixtures belong in conftest.py or their test module: %s" % fixtures


def test_one_fixture_name_means_one_fixture():
    defined = {}
    for path in MODULES:
        for node in ast.walk(parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and is_fixture(node):
                defined.setdefault(node.name, []).append(where(path, node))
    twice = {name: at for name, at in defined.items() if len(at) > 1}
    assert not twice, "a fixture name defined more than once: %s" % twice
