"""The shape of the package, checked: no import cycles, the offline parts import nothing from
the proxy, and no module grows past the size a newcomer reads in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lookahead_router"
MAX_LINES = 420
# Imports made inside a function that may point back up. Router.load finds a saved router's class
# in the registry, which imports every router class (and so base.py): a lookup by name at call time.
LAZY_BACK_EDGES = {("lookahead_router.routers.base", "lookahead_router.routers.registry")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path], lazy: bool) -> set[str]:
    """The package modules ``name`` imports at module level (``lazy``: inside functions too)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if lazy else [n for n in tree.body] + [
        n for top in tree.body if isinstance(top, (ast.If, ast.Try)) for n in ast.walk(top)]
    found = set()
    for node in nodes:
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(name.split(".")[:-node.level] + [node.module])
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("lookahead_router"):
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):   # a package importing its own modules is not a cycle
                continue
            visit(nxt)
        stack.pop()
    for node in sorted(graph):
        visit(node)
    return cycles


def test_no_import_cycles():
    modules = _modules()
    for lazy in (False, True):
        graph = {m: {t for t in _imports(p, m, modules, lazy) if (m, t) not in LAZY_BACK_EDGES}
                 for m, p in modules.items()}
        # a package's __init__ re-exporting its modules is how packages work, not an arrow back up
        graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
        assert _cycles(graph) == [], f"import cycles ({'inside functions too' if lazy else 'module level'})"


def test_the_offline_parts_import_nothing_from_the_proxy():
    modules = _modules()
    offline = ("data", "metrics", "evaluation", "routers", "training", "collection", "analysis")
    for name, path in modules.items():
        if name.split(".")[1:2] and name.split(".")[1] in offline:
            bad = {t for t in _imports(path, name, modules, lazy=True) if t.startswith("lookahead_router.serving")}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_no_module_is_longer_than_an_afternoon_allows():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
