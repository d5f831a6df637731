"""MODEL_CARD.md: generated from the run's files, its numbers are theirs."""

import hashlib
import json
import re

import pytest

from kclassify.evaluation.card import sha256, wilson_interval


def test_the_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(8, 10)  # the usual worked example: 0.490 to 0.943
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 0) == (0.0, 1.0) and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_a_folder_hash_covers_names_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"1")
    first = sha256(tmp_path / "a")
    (tmp_path / "a" / "x.bin").rename(tmp_path / "a" / "y.bin")
    assert sha256(tmp_path / "a") != first  # renamed: another folder
    assert sha256(tmp_path / "a" / "y.bin") == hashlib.sha256(b"1").hexdigest()


@pytest.mark.slow
def test_the_card_says_what_the_run_and_its_export_say(tiny_run, tmp_path):
    import shutil

    from kclassify.evaluation import evaluate
    from kclassify.export import export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # evaluate and export write into the run: a copy of the shared one
    evaluate(run)
    result = export(run, "tflite,tflite-int8", latency_runs=2)
    card = (run / "MODEL_CARD.md").read_text()
    assert card == (run / "export" / "MODEL_CARD.md").read_text()
    info = json.loads((run / "run.json").read_text())
    report = json.loads((run / "evaluation" / "report.json").read_text())
    exported = json.loads((run / "export" / "export_report.json").read_text())
    for section in ("## Model details", "## Intended uses & limitations", "## Training data", "## Training procedure",
                    "## Evaluation results", "## Exported files", "## Files"):
        assert section in card
    assert f"{info['parameters']:,} parameters" in card and info["data"]["fingerprint"] in card
    m = report["metrics"]
    assert re.search(rf"accuracy {m['accuracy']:.4f} \({round(m['accuracy'] * m['images'])} of {m['images']};", card)
    for row in m["per_class"]:
        assert f"| {row['label']} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |" in card
    for f in exported["formats"]:
        assert f"| {f['format']} | {f['status']} | {f['accuracy']:.4f} |" in card and f"{f['latency_ms']:.2f} |" in card
    assert hashlib.sha256((run / "model.keras").read_bytes()).hexdigest() in card
    int8 = next(f for f in result.formats if f.format == "tflite-int8")
    assert hashlib.sha256(open(int8.file, "rb").read()).hexdigest() in card
    for split, counts in info["data"]["counts"].items():
        assert split in card and all(f"| {c} |" in card for c in counts)
