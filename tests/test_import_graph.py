"""The house: interp/'s import graph, read with ``ast`` (imports inside functions included), has no circle and no
edge from a layer up to a higher one (``interp.LAYERS``)."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import interp

ROOT = Path(interp.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool, known: dict) -> list[str]:
    """The interp modules an import statement loads (``from pkg import sub`` names the submodule itself)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = module.split(".") if is_pkg else module.split(".")[:-1]
            base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            out.append(name)
    return out


def _in_function(tree: ast.AST) -> set[int]:
    ids = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            ids |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return ids


@functools.lru_cache(maxsize=1)  # parsed once for the three tests
def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}``.

    One kind of edge is left out: a submodule importing its own ancestor package *inside a function* (e.g.
    ``attnstats.rows`` reading ``AttnStats`` from ``interp.attnstats``). Python initialises a package before
    any of its submodules, and a function body runs after both exist, so such an edge can never decide load
    order; counting it would force every package that keeps its shared types in ``__init__`` to split them out."""
    known = _modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        late = _in_function(tree)
        edges = graph.setdefault(module, {})
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, module, path.name == "__init__.py", known):
                if id(node) in late and module.startswith(target + "."):
                    continue
                edges.setdefault(target, node.lineno)
    return graph


def layer_of(module: str) -> int:
    best = max(((len(p), i) for i, layer in enumerate(interp.LAYERS) for p in layer
                if module == p or module.startswith(p + ".")), default=None)
    assert best is not None, f"{module} is in no layer; add it to interp.LAYERS (interp/__init__.py)"
    return best[1]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_upward_import():
    up = [f"{m}:{line} imports {t} (layer {layer_of(t)} > {layer_of(m)})"
          for m, edges in import_graph().items() for t, line in edges.items() if layer_of(t) > layer_of(m)]
    assert up == [], "\n".join(up)


def test_checker_sees_circles_and_upward_edges():
    """The checker itself: a planted circle and an upward import are found."""
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert layer_of("interp.analyze.sinks") > layer_of("interp.intervene.run") > layer_of("interp.attnstats.rows")
    assert layer_of("interp.attnstats.kernels.cpu") < layer_of("interp.edits") < layer_of("interp.attnstats")
    graph = import_graph()
    assert "interp.intervene.run" in graph["interp.analyze.patching"]  # imports inside functions are read too
    assert "interp.intervene.means" in graph["interp.sweep.units"]
