"""evaluate: metric values against hand-computed ones, calibration, suspects, plots, the report and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, make_image, write_class_folder

from kclassify.evaluation import calibration as cal
from kclassify.evaluation.metrics import at_threshold, best_f1_threshold, classification_metrics, most_confused
from kclassify.evaluation.suspects import find_suspects
from kclassify.inference.calibration import apply_temperature

PNG = b"\x89PNG\r\n\x1a\n"
FLIP_FROM, FLIP_TO = "red", "green"


# ---------------------------------------------------------------- metrics on tiny fixed predictions

def test_two_class_metrics_match_hand_computed_values():
    # true cat, dog, dog; predicted cat, dog, cat
    m = classification_metrics([0, 1, 1], [[.9, .1], [.2, .8], [.6, .4]], ["cat", "dog"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert [r["precision"] for r in m["per_class"]] == pytest.approx([1 / 2, 1.0])
    assert [r["recall"] for r in m["per_class"]] == pytest.approx([1.0, 1 / 2])
    assert m["macro"]["f1"] == pytest.approx(2 / 3)  # both classes: 2*0.5*1/(1.5)
    assert m["weighted"]["precision"] == pytest.approx((1 * .5 + 2 * 1.0) / 3)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    # kappa: p_o = 2/3, p_e = (1/3)(2/3) + (2/3)(1/3) = 4/9 -> (2/3 - 4/9) / (5/9) = 0.4
    assert m["cohen_kappa"] == pytest.approx(0.4)
    assert m["log_loss"] == pytest.approx(-(np.log(.9) + np.log(.8) + np.log(.4)) / 3)
    # dog scores .1 (cat), .8, .4 (dogs): every dog above the cat -> AUC 1
    assert m["roc_auc"]["per_class"]["dog"] == 1.0
    assert m["confusion_matrix"]["counts"] == [[1, 0], [1, 1]]
    assert m["confusion_matrix"]["normalized"] == [[1.0, 0.0], [0.5, 0.5]]
    assert m["most_confused"] == [{"true": "dog", "predicted": "cat", "count": 1, "share_of_true": 0.5}]
    assert m["top_k_accuracy"] is None  # only with more than 5 classes


def test_auc_average_precision_and_absent_classes():
    y = [0, 0, 1, 1, 2]
    p = np.array([[.7, .2, .1, 0], [.3, .6, .1, 0], [.4, .5, .1, 0], [.1, .8, .1, 0], [.2, .2, .6, 0]])
    m = classification_metrics(y, p, ["a", "b", "c", "d"])
    # class a: positives .7, .3 vs negatives .4, .1, .2 -> pairs won: (.7: 3) + (.3: 2) = 5 of 6
    assert m["roc_auc"]["per_class"]["a"] == pytest.approx(5 / 6)
    # class a ranked by score: .7 (pos), .4 (neg), .3 (pos): AP = (1/1 + 2/3) / 2
    assert m["average_precision"]["per_class"]["a"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["roc_auc"]["per_class"]["d"] is None  # no image of d: no curve, and left out of the macro mean
    assert m["roc_auc"]["macro"] == pytest.approx(np.mean([m["roc_auc"]["per_class"][c] for c in "abc"]))
    assert m["per_class"][3]["support"] == 0
    assert len(m["confusion_matrix"]["counts"]) == 4  # every class the model knows


def test_top5_accuracy_with_more_than_five_classes():
    p = np.tile(np.linspace(0.3, 0.05, 7), (3, 1))  # ranking 0 > 1 > ... > 6 for every image
    p /= p.sum(axis=1, keepdims=True)
    m = classification_metrics([4, 5, 6], p, list("abcdefg"))
    assert m["top_k_accuracy"] == {"k": 5, "value": pytest.approx(1 / 3)}  # only class 4 is in the top 5
    assert m["accuracy"] == 0.0


def test_most_confused_orders_by_count_then_share():
    counts = np.array([[5, 2, 0], [3, 1, 0], [0, 2, 8]])
    pairs = most_confused(counts, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("b", "a", 3), ("a", "b", 2), ("c", "b", 2)]  # a->b is 2 of 7, c->b 2 of 10


def test_binary_threshold_maximises_f1():
    y = [0, 1, 1, 0]
    p = np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]])
    found = best_f1_threshold(y, p)
    # from 0.4 up the three highest are positive: precision 2/3, recall 1 -> F1 0.8 (0.7: 1/2, 1/2; 0.8: 1, 1/2);
    # the threshold sits midway between 0.4 and the next lower score, 0.1
    assert found["threshold"] == pytest.approx(0.25)
    assert found["f1"] == pytest.approx(0.8)
    assert at_threshold(y, p, 0.75) == {"threshold": 0.75, "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}


# ---------------------------------------------------------------- calibration

def test_ece_matches_a_hand_computed_value():
    p = np.array([[.9, .1], [.9, .1], [.4, .6], [.4, .6]])
    y = [0, 1, 1, 1]  # confidence .9: half right -> |.5 - .9|; confidence .6: all right -> |1 - .6|
    assert cal.expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    bins = [b for b in cal.reliability_bins(y, p) if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in bins] == [(2, 1.0), (2, 0.5)]


def test_temperature_softens_an_over_confident_model_and_lowers_held_out_nll():
    rng = np.random.default_rng(0)

    def overconfident(n):  # ~70% accurate logits, then multiplied by 6: far too sure of itself
        y = rng.integers(0, 4, n)
        logits = rng.normal(0, 1, (n, 4))
        logits[np.arange(n), y] += 1.2
        e = np.exp(6 * logits)
        return y, e / e.sum(axis=1, keepdims=True)

    (y_val, p_val), (y_test, p_test) = overconfident(400), overconfident(400)
    report = cal.calibration_report(y_test, p_test, y_val, p_val, "val")
    assert 3 < report["temperature"] < 10  # about the factor put in
    assert report["log_loss_calibrated"] < 0.8 * report["log_loss"]
    assert report["ece_calibrated"] < 0.5 * report["ece"]
    scaled = apply_temperature(p_test, report["temperature"])
    assert (scaled.argmax(1) == p_test.argmax(1)).all()  # never changes a prediction


def test_apply_temperature_is_softmax_of_scaled_logits():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
    assert apply_temperature(p, 2.0) == pytest.approx(expected, abs=1e-6)
    assert apply_temperature(p, 1.0) == pytest.approx(p, abs=1e-7)


def test_without_validation_images_the_temperature_stays_one():
    report = cal.calibration_report([0, 1], np.array([[.8, .2], [.3, .7]]))
    assert report["temperature"] == 1.0 and report["fitted_on"] is None
    assert report["not_fitted"] == "no validation images to fit a temperature"


def test_a_validation_split_with_too_few_errors_keeps_the_temperature_at_one():
    """196 right at 0.9 and 4 wrong at 0.6: the likelihood alone sharpens (towards T's lower bound with no error)."""
    y = np.zeros(200, np.int64)
    p = np.tile([0.9, 0.1], (200, 1))
    p[:4] = [0.4, 0.6]
    assert cal.fit_temperature(y[4:], p[4:]) < 0.2  # no error: towards the lower bound
    assert cal.fit_temperature(y, p) < 0.5  # four: every served probability much nearer 0 or 1
    report = cal.calibration_report(y, p, y, p, "val")
    assert report["temperature"] == 1.0 and report["fitted_on"] is None and report["fitted_images"] == 0
    assert report["not_fitted"].startswith("4 of the 200 val images misclassified")
    p[4] = [0.4, 0.6]  # a fifth error: fitted
    fitted = cal.calibration_report(y, p, y, p, "val")
    assert fitted["fitted_on"] == "val" and fitted["not_fitted"] is None and fitted["temperature"] != 1.0


# ---------------------------------------------------------------- suspects

def test_suspects_rank_flipped_labels_first():
    rng = np.random.default_rng(1)
    n, k = 90, 3
    truth = np.repeat(np.arange(k), n // k)
    p = np.full((n, k), 0.04) + rng.uniform(0, 0.04, (n, k))
    p[np.arange(n), truth] = rng.uniform(0.75, 0.95, n)
    given = truth.copy()
    flipped = [4, 40, 77]
    given[flipped] = (truth[flipped] + 1) % k
    rows = find_suspects(given, p / p.sum(1, keepdims=True), ["a", "b", "c"], [str(i) for i in range(n)], ["test"] * n)
    assert sorted(int(r["path"]) for r in rows[:3]) == flipped
    assert len(rows) <= 5  # the clean images are not flagged wholesale
    assert rows[0]["suggested_label"] == "abc"[truth[int(rows[0]["path"])]]


def test_a_model_at_chance_lists_no_suspects():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(3) * 50, 90)  # ~1/3 everywhere: its argmax says nothing
    assert find_suspects(np.repeat(np.arange(3), 30), p, list("abc"), [str(i) for i in range(90)], ["test"] * 90) == []


def test_suspects_need_enough_images():
    assert find_suspects([0, 0], np.array([[.9, .1], [.2, .8]]), ["a", "b"], ["x", "y"], ["test"] * 2) == []


# ---------------------------------------------------------------- a whole evaluation of a run

def _flip_names(dst: str, wanted: int, seed: int, in_split: bool) -> list[str]:
    """File names in class ``dst`` whose split (fit's hash rule) is val/test (``in_split``) or train."""
    from kclassify.data.split import unit_hash

    names, i = [], 0
    while len(names) < wanted:
        name = f"flip_{i:03d}.png"
        if (unit_hash(seed, f"{dst}/{name}") < 0.2) == in_split:
            names.append(name)
        i += 1
    return names


def _flipped_folder(root: Path, in_split: bool) -> tuple[Path, list[str]]:
    """4 colour classes; 3 red images filed under green, placed in val/test or in train."""
    from PIL import Image

    data = write_class_folder(root, classes=("red", "green", "blue", "yellow"), per_class=30, size=16)
    names = _flip_names(FLIP_TO, 3, TINY["seed"], in_split)
    for j, name in enumerate(names):
        Image.fromarray(make_image(0, 16, seed=5000 + j)).save(data / FLIP_TO / name)
    return data, [f"{FLIP_TO}/{n}" for n in names]


@pytest.fixture(scope="module")
def flipped_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KCLASSIFY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kclassify-cache"))
        from kclassify import fit
        from kclassify.evaluation import evaluate

        root = tmp_path_factory.mktemp("flipped")
        data, flipped = _flipped_folder(root / "data", in_split=True)
        run = fit(data=str(data), output=root / "run", verbose=0, **{**TINY, "epochs": 4}).run_dir
        result = evaluate(run)
    return run, result, flipped


def test_evaluate_writes_a_consistent_report_into_the_run(flipped_run):
    run, result, flipped = flipped_run
    report = json.loads((run / "evaluation" / "report.json").read_text())
    assert result.folder == run / "evaluation" and report["data"]["split"] == "test"
    rows = (result.folder / "predictions.csv").read_text().splitlines()[1:]
    right = sum(r.split(",")[2] == r.split(",")[3] for r in rows)
    assert len(rows) == report["metrics"]["images"] and report["metrics"]["accuracy"] == pytest.approx(right / len(rows))
    counts = np.array(report["metrics"]["confusion_matrix"]["counts"])
    assert counts.sum() == len(rows) and np.trace(counts) == right
    # the flipped test images are the only mistakes a colour classifier makes: predicted red, labelled green
    flipped_in_test = [r for r in rows if r.split(",")[0] in flipped and r.split(",")[1] == "test"]
    assert len(rows) - right == len(flipped_in_test)
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["macro_f1"] == report["headline"]["macro_f1"] and metrics["accuracy"] == pytest.approx(right / len(rows))
    # at most 3 of the validation images are misclassified (the flipped ones): too few to fit a temperature on
    stored = json.loads((run / "calibration.json").read_text())
    assert report["calibration"]["temperature"] == stored["temperature"] == 1.0 and stored["fitted_on"] is None
    assert "misclassified: too few" in stored["not_fitted"] == report["calibration"]["not_fitted"]


def test_suspects_find_the_flipped_images_at_the_top(flipped_run):
    run, result, flipped = flipped_run
    lines = (result.folder / "suspect_labels.csv").read_text().splitlines()
    top = [line.split(",")[1] for line in lines[1:4]]
    assert sorted(top) == sorted(flipped)
    assert all(line.split(",")[5] == FLIP_FROM for line in lines[1:4])  # suggested: the colour they are
    assert result.report["suspects"]["count"] <= 5


def test_plots_are_png_and_tensorboard_has_the_confusion_matrix(flipped_run):
    from PIL import Image

    run, result, _ = flipped_run
    plots = result.report["plots"]
    assert {"confusion_matrix", "roc", "precision_recall", "reliability", "training_curves"} <= set(plots)
    for rel in plots.values():
        path = result.folder / rel
        assert path.read_bytes()[:8] == PNG
        with Image.open(path) as im:
            assert im.size[0] > 300 and len(set(im.convert("L").getdata())) > 10  # drawn, not blank

    import tensorflow as tf

    tags = {v.tag for f in (run / "logs" / "evaluation").glob("events.*")
            for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
    assert {"test/confusion_matrix", "test/macro_f1", "test/ece"} <= tags
    history = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"val_f1", "val_auc"} <= set(history)  # per epoch, so TensorBoard's scalars have them too


def test_report_html_is_self_contained(flipped_run):
    _, result, flipped = flipped_run
    page = (result.folder / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    heat_maps = page.count("<figcaption>looks for ")  # Grad-CAM beside the gallery's images
    assert heat_maps >= 2 * len(flipped) and page.count("data:image/png;base64,") == len(result.report["plots"]) + heat_maps
    assert f"{result.report['metrics']['accuracy']:.3f}" in page
    assert all(name in page for name in flipped)  # in the mistakes gallery and the suspect list


def test_report_renders_in_a_headless_browser(flipped_run, tmp_path):
    from PIL import Image

    from cdp import FLAGS as CHROMIUM_FLAGS
    from cdp import chromium_path

    browser = chromium_path()
    _, result, flipped = flipped_run
    url = (result.folder / "report.html").resolve().as_uri()
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'id="headline"' in dom and f"{result.report['metrics']['accuracy']:.3f}" in dom
    m = result.report["metrics"]
    mistakes = m["images"] - np.trace(np.array(m["confusion_matrix"]["counts"]))
    tiles = mistakes + len(result.report["suspects"]["top"])
    assert dom.count('class="tile') == tiles >= len(flipped)
    # a Keras model's page: where it looks, for the true and the predicted class of each tile
    assert result.report["gradcam"] and dom.count("<figcaption>looks for ") == 2 * tiles
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--screenshot={shot}", "--window-size=1200,1600", url],
                   capture_output=True, timeout=120)
    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # plots and thumbnails drawn, not an empty page


def test_a_tflite_file_of_the_run_is_evaluated_on_the_same_images(flipped_run):
    from kclassify.evaluation import evaluate
    from kclassify.export import export

    run, result, _ = flipped_run
    fitted = {**json.loads((run / "calibration.json").read_text()), "temperature": 1.7, "fitted_on": "val"}
    (run / "calibration.json").write_text(json.dumps(fitted))  # as if evaluate had fitted one
    export(run, "tflite-int8", output=run / "export", latency_runs=2)
    int8 = evaluate(run / "export" / "model_int8.tflite")
    assert int8.folder == run / "evaluation-model_int8.tflite"
    assert int8.report["metrics"]["images"] == result.report["metrics"]["images"]
    assert abs(int8.report["metrics"]["accuracy"] - result.report["metrics"]["accuracy"]) <= 0.05
    assert int8.report["model"]["kind"] == "tflite"
    assert json.loads((run / "export" / "calibration.json").read_text())["temperature"] == 1.7  # carried along


def test_cli_evaluate_and_its_errors(flipped_run, tmp_path, capsys):
    from kclassify.cli import main

    run, result, _ = flipped_run
    out = tmp_path / "again"
    assert main(["evaluate", str(run), "--split", "val", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on val" in printed and str(out / "report.html") in printed
    assert json.loads((out / "report.json").read_text())["data"]["split"] == "val"
    loose = tmp_path / "loose.keras"
    shutil.copy(run / "model.keras", loose)
    shutil.copy(run / "labels.txt", tmp_path / "labels.txt")
    assert main(["evaluate", str(loose)]) == 2
    assert "pass --data" in capsys.readouterr().err
    data = Path(json.loads((run / "run.json").read_text())["data"]["root"])
    assert main(["evaluate", str(loose), "--data", str(data), "--output", str(tmp_path / "all")]) == 0
    everything = json.loads((tmp_path / "all" / "report.json").read_text())
    assert everything["data"]["split"] == "all" and everything["metrics"]["images"] == 123


@pytest.mark.slow
def test_a_binary_run_gets_a_threshold(tmp_path):
    from kclassify import fit
    from kclassify.evaluation import evaluate

    data = write_class_folder(tmp_path / "data", classes=("no", "yes"), per_class=25, size=16)
    run = fit(data=str(data), output=tmp_path / "run", verbose=0, **TINY).run_dir
    result = evaluate(run, split="all")
    t = result.report["threshold"]
    assert t["positive_label"] == "yes" and 0 < t["threshold"] < 1 and t["on_evaluated_split"]["f1"] > 0.9
    assert json.loads((run / "calibration.json").read_text())["threshold"]["value"] == t["threshold"]
    assert "threshold" in result.report["plots"]


@pytest.mark.slow
def test_cross_validation_finds_flipped_training_images(tmp_path):
    from kclassify import fit
    from kclassify.evaluation import evaluate

    data, flipped = _flipped_folder(tmp_path / "data", in_split=False)  # in train: the run's model fits them
    run = fit(data=str(data), output=tmp_path / "run", verbose=0, **{**TINY, "epochs": 4}).run_dir
    result = evaluate(run, cross_validate=2, output=tmp_path / "cv")
    assert result.report["suspects"]["images"] == 123
    top = [r["path"] for r in result.report["suspects"]["top"][:3]]
    assert sorted(top) == sorted(flipped)


def test_training_curves_of_a_run_without_validation_images(tmp_path):
    """Keras' CSVLogger writes "NA" in every val_ column when there are no validation images (fit --val-fraction 0,
    tune --final-data train+val): the curves show training alone instead of failing the report."""
    from kclassify.evaluation.plots import training_curves

    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,NA,NA\n1,0.7,0.8,NA,NA\n")
    path = training_curves(tmp_path / "curves.png", history)
    assert path == tmp_path / "curves.png" and path.stat().st_size > 1000
