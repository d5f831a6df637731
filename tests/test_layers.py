"""Imports point one way: each layer imports only the layers before it (and the base modules)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kclassify"
# Inference sits right after models: it only reads artifacts through the data layer's decode, and
# fit scores its test split through it, as every later command does.
LAYERS = ["data", "models", "inference", "training", "tuning", "evaluation", "export", "serving", "cli"]
BASE = {"errors", "config", "runs", "plotting", "htmlpage", "search_spaces"}


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
