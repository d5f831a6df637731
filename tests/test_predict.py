"""`kclassify predict` on good and bad files; `fit --export` runs the export at the end of training."""

import csv
import io
import json

import pytest

from conftest import TINY, make_image, write_class_folder
from kclassify.cli import main


def _mixed_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    for k, name in enumerate(("red.png", "green.jpg", "sub/blue.webp")):
        Image.fromarray(make_image(k, 28, seed=k)).save(folder / name)
    (folder / "broken.jpg").write_text("not really a jpeg")
    (folder / "notes.md").write_text("skipped: not an image extension")
    return folder


def test_predict_reports_bad_files_and_predicts_the_rest(tiny_run, tmp_path, capsys):
    folder = _mixed_folder(tmp_path)
    code = main(["predict", str(tiny_run), str(folder), str(tmp_path / "missing.png"), "--format", "json",
                 "--top-k", "2"])
    captured = capsys.readouterr()
    assert code == 1 and "2 of 5 file(s) could not be predicted" in captured.err
    doc = {d["path"].rsplit("/", 1)[-1]: d for d in json.loads(captured.out)}
    assert sorted(doc) == ["blue.webp", "broken.jpg", "green.jpg", "missing.png", "red.png"]
    assert [p["label"] for p in doc["red.png"]["predictions"]][0] == "cat"
    assert doc["green.jpg"]["predictions"][0]["label"] == "dog" and len(doc["green.jpg"]["predictions"]) == 2
    assert doc["blue.webp"]["predictions"][0]["label"] == "fox"
    assert doc["missing.png"]["error"] == "missing file" and "Pillow" in doc["broken.jpg"]["error"]


def test_predict_csv_and_table_with_an_exported_file(tiny_export, tmp_path, capsys):
    folder = _mixed_folder(tmp_path)
    model = str(tiny_export.folder / "model_int8.tflite")
    assert main(["predict", model, str(folder / "red.png"), str(folder / "sub"), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["path"].rsplit("/", 1)[-1], r["rank"], r["label"]) for r in rows] == [
        ("red.png", "1", "cat"), ("blue.webp", "1", "fox")]
    assert 0.5 < float(rows[0]["probability"]) <= 1.0
    assert main(["predict", model, str(folder / "green.jpg")]) == 0
    assert capsys.readouterr().out.split()[1] == "dog"


@pytest.mark.slow
def test_fit_export_trains_then_exports_in_one_command(tmp_path, capsys):
    data = write_class_folder(tmp_path / "data", per_class=14)
    assert main(["fit", "--data", str(data), "--export", "tflite-int9", "--output", str(tmp_path / "bad")]) == 2
    assert "Did you mean 'tflite-int8'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "epochs": 2}.items()]
    run = tmp_path / "run"
    code = main(["fit", "--data", str(data), "--output", str(run), "--export", "tflite-int8", *flags])
    out = capsys.readouterr().out
    assert code == 0, out
    # stdout is not a terminal here: one line per epoch, no progress-bar fragments
    assert "\x1b[" not in out and "\r" not in out
    assert len([line for line in out.splitlines() if " - loss: " in line]) == 2
    assert (run / "export" / "model_int8.tflite").is_file() and "tflite-int8" in out and "exported" in out
    report = json.loads((run / "export" / "export_report.json").read_text())
    assert [f["format"] for f in report["formats"]] == ["tflite-int8"] and report["ok"]


# Loaded first by every Python process started with this folder on PYTHONPATH: while TensorFlow imports,
# it writes a line to file descriptor 2 as TensorFlow's C++ logging does, on every CPU. TensorFlow's own
# start-up lines depend on the machine (oneDNN's notice only where oneDNN is on by default, a cuInit error
# only where CUDA libraries are found), so the test cannot count on any of them being printed.
NATIVE_LINE = "native start-up line (test stand-in)"
SITECUSTOMIZE = f"""
import os, sys

class NoisyTensorFlow:  # finds nothing itself: only writes as the import of TensorFlow begins
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            os.write(2, b"{NATIVE_LINE}\\n")
        return None

sys.meta_path.insert(0, NoisyTensorFlow())
"""


@pytest.mark.slow
def test_cli_start_up_is_quiet_unless_verbose(tiny_run, tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    image = tmp_path / "one.png"
    Image.fromarray(make_image(0, 16)).save(image)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), os.getcwd(), env.get("PYTHONPATH", "")])

    def predict(*flags):
        done = subprocess.run([sys.executable, "-m", "kclassify", *flags, "predict", str(tiny_run), str(image)],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0 and done.stdout.split()[1] == "cat", done.stderr
        return done.stderr

    quiet = predict()
    assert quiet == "", quiet  # neither the stand-in nor any oneDNN, CUDA or absl line of this machine
    assert NATIVE_LINE in predict("-v")  # -v lets what TensorFlow's C++ side writes through


def test_predict_without_images_says_so(tiny_run, tmp_path, capsys):
    (tmp_path / "notes.md").write_text("no images here")
    assert main(["predict", str(tiny_run), str(tmp_path)]) == 2
    assert "No image files in" in capsys.readouterr().err
    assert main(["predict", str(tiny_run), str(tmp_path / "notes.md"), "--threads", "0"]) == 2
    assert "threads must be at least 1" in capsys.readouterr().err


def test_tune_export_needs_then_fit(capsys):
    assert main(["tune", "--export", "tflite"]) == 2
    assert "--export exports the retrained best run: add --then-fit" in capsys.readouterr().err
