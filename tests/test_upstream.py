"""The private APIs kclassify touches (kclassify/upstream.py) still look as they did when checked."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kclassify"


def test_the_private_apis_are_as_checked(tmp_path):
    import keras
    import tensorflow as tf

    from kclassify.upstream import problems

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    found = problems(str(path))
    assert not found, "an upgrade changed a private API kclassify uses:\n" + "\n".join(found)


def test_the_check_reports_a_missing_private_api(monkeypatch):
    import keras_tuner

    from kclassify.upstream import problems

    monkeypatch.delattr(keras_tuner.Tuner, "_build_hypermodel")
    found = problems()
    assert len(found) == 1 and found[0].startswith("keras_tuner Tuner._build_hypermodel: not as in keras_tuner 1.4.8")


def test_no_other_module_reaches_into_another_objects_private_names():
    """``x._name`` for any x but ``self`` and ``cls`` (a library, its objects, ``super()``, another kclassify
    object) appears in kclassify/upstream.py only."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "upstream.py" or "metadata_schema" in path.name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert not wrong, "private names reached outside kclassify/upstream.py:\n" + "\n".join(wrong)
