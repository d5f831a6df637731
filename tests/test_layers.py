"""Imports point one way: each layer imports only the layers before it (and the base modules)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kclassify"
# Inference sits right after models: it only reads artifacts through the data layer's decode, and
# fit scores its test split through it, as every later command does.
LAYERS = ["data", "models", "inference", "training", "tuning", "evaluation", "export", "serving", "cli"]
BASE = {"errors", "config", "runs", "plotting", "htmlpage", "search_spaces", "upstream", "_vendor"}


def _imported_layers(path: Path) -> set[str]:
    """Top-level kclassify subpackages a module imports (absolute or relative imports)."""
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for kclassify/runs.py, 1 for kclassify/data/x.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb to the package root
                if node.level - 1 < depth:
                    continue  # inside its own layer
                parts = (node.module or "").split(".")
                names = [parts[0]] if parts[0] else [a.name for a in node.names]
            elif (node.module or "").startswith("kclassify."):
                names = [node.module.split(".")[1]]
            elif node.module == "kclassify":
                names = [a.name for a in node.names]
            else:
                continue
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("kclassify."))
    return found


def test_each_layer_imports_only_earlier_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if layer == "__init__" or layer == "__main__":
            continue  # the public API re-exports every layer (lazily)
        # base modules (errors, config, runs) come before every layer
        allowed = (set(LAYERS[: LAYERS.index(layer) + 1]) if layer in LAYERS else set()) | BASE | {"__init__", ""}
        bad = {m for m in _imported_layers(path) if m in LAYERS and m not in allowed}
        if bad:
            wrong.append(f"{rel} imports {sorted(bad)}")
    assert not wrong, "layer order " + " < ".join(LAYERS) + " broken:\n" + "\n".join(wrong)


def test_the_check_sees_a_backward_import(tmp_path):
    (tmp_path / "kclassify" / "data").mkdir(parents=True)
    bad = tmp_path / "kclassify" / "data" / "bad.py"
    bad.write_text("from ..training.fit import fit\nfrom kclassify.export import export\nfrom .files import x\n"
                   "from kclassify import inference\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "kclassify"
    try:
        assert _imported_layers(bad) == {"training", "export", "inference"}
    finally:
        PACKAGE = saved


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, package: Path, known: set[str]) -> set[str]:
    """kclassify modules one module imports, at the top or inside a function (``from . import x``: x itself)."""
    name = _module_name(path, package)
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = {f"{module}.{a.name}" for a in node.names} & known
            found |= submodules or {module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return (found & known) - {name}


def import_cycles(package: Path = PACKAGE) -> list[list[str]]:
    """Groups of kclassify modules that import each other, directly or round a loop (Tarjan's components)."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph = {m: _module_imports(p, package, set(files)) for m, p in files.items()}
    index, low, stack, cycles = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_not_even_through_function_level_imports():
    cycles = import_cycles()
    assert not cycles, "modules importing each other (move what both need into a third module):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_function_level_cycle(tmp_path):
    package = tmp_path / "kclassify"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("from .a import A\n")
    (package / "data" / "a.py").write_text("A = 1\ndef f():\n    from .b import B\n")
    (package / "data" / "b.py").write_text("from . import a\nB = 2\n")
    (package / "data" / "c.py").write_text("from .a import A\n")
    assert import_cycles(package) == [["kclassify.data.a", "kclassify.data.b"]]
