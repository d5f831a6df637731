"""``kclassify compare``: a paired comparison of two evaluations, checked against figures computed by hand."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score

from kclassify.errors import ConfigError, DataError, RunFolderError
from kclassify.evaluation.compare import compare, paired


def _write(path, rows, split="test"):
    """A predictions.csv as kclassify evaluate writes it: (image, label, predicted) rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["path,split,label,predicted,confidence,label_probability"]
    lines += [f"{p},{split},{y},{q},0.9,0.5" for p, y, q in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_counts_and_mcnemar_by_hand():
    # 20 images: A right on 10, B right on 14; B fixes 5 of A's mistakes and breaks 1 of its right answers
    y = ["x"] * 10 + ["y"] * 10
    a = ["x"] * 10 + ["x"] * 10  # right on the 10 x's
    b = ["x"] * 9 + ["y"] + ["y"] * 5 + ["x"] * 5  # breaks one x, fixes five y's: right on 9 + 5
    c = paired(y, a, b, resamples=2000)
    assert (c.accuracy_a, c.accuracy_b) == (0.5, 0.7)
    assert (c.only_a_right, c.only_b_right) == (1, 5)
    # two-sided exact binomial of 1 in 6 at p = 1/2: 2 * (C(6,0) + C(6,1)) / 2**6 = 14/64
    assert c.mcnemar_p == pytest.approx(14 / 64)
    assert c.accuracy_difference.value == pytest.approx(0.2)
    # the macro F1s are scikit-learn's
    assert c.macro_f1_a == pytest.approx(f1_score(y, a, average="macro"))
    assert c.macro_f1_b == pytest.approx(f1_score(y, b, average="macro"))
    assert c.macro_f1_difference.value == pytest.approx(c.macro_f1_b - c.macro_f1_a)
    d = c.accuracy_difference
    assert d.low < 0.2 < d.high and -1 <= d.low and d.high <= 1


def test_identical_predictions_have_no_difference_and_no_width():
    y = list("abcabcabca")
    pred = list("abcabccbaa")
    c = paired(y, pred, pred, resamples=500)
    assert c.accuracy_difference.low == c.accuracy_difference.high == 0.0
    assert c.macro_f1_difference.low == c.macro_f1_difference.high == 0.0
    assert c.mcnemar_p == 1.0 and c.only_a_right == c.only_b_right == 0


def test_interval_is_paired_and_shrinks_with_more_images():
    rng = np.random.default_rng(1)

    def pair(n):  # B = A with a tenth of A's mistakes fixed; A right on 70%
        y = rng.integers(0, 4, n)
        a = np.where(rng.random(n) < 0.7, y, (y + 1) % 4)
        b = np.where((a != y) & (rng.random(n) < 0.3), y, a)
        return [str(v) for v in y], [str(v) for v in a], [str(v) for v in b]

    small, large = paired(*pair(200), resamples=2000), paired(*pair(3200), resamples=2000)
    assert large.accuracy_difference.low > 0.05  # +9 points on 3,200 images: the interval excludes 0
    assert large.mcnemar_p < 1e-6 and large.only_a_right == 0
    width = lambda c: c.accuracy_difference.high - c.accuracy_difference.low  # noqa: E731
    assert width(large) < width(small) / 2.5  # 16x the images: a quarter of the width (sqrt), with margin
    # Paired: B only fixes A's mistakes, so a resample's difference is the share of draws that land on the
    # k fixed images, Binomial(n, k/n) / n; its 2.5% and 97.5% points are the interval (an unpaired
    # bootstrap would be about twice as wide: +0.9 to +17 points here).
    from scipy.stats import binom

    n, k = small.images, small.only_b_right
    assert small.accuracy_difference.low == pytest.approx(binom.ppf(0.025, n, k / n) / n, abs=1.01 / n)
    assert small.accuracy_difference.high == pytest.approx(binom.ppf(0.975, n, k / n) / n, abs=1.01 / n)


def test_bootstrap_matches_the_normal_approximation():
    # 1,000 images, 60 only A right, 100 only B right: sd of the paired difference = sqrt((b + c) - (c - b)^2 / n) / n
    y = ["k"] * 1000
    a = ["k"] * 60 + ["m"] * 100 + ["k"] * 700 + ["m"] * 140
    b = ["m"] * 60 + ["k"] * 100 + ["k"] * 700 + ["m"] * 140
    c = paired(y, a, b, resamples=20_000)
    sd = np.sqrt(160 - 40**2 / 1000) / 1000
    assert c.accuracy_difference.value == pytest.approx(0.04)
    assert c.accuracy_difference.low == pytest.approx(0.04 - 1.96 * sd, abs=0.004)
    assert c.accuracy_difference.high == pytest.approx(0.04 + 1.96 * sd, abs=0.004)


def test_compare_reads_run_tuning_and_evaluation_folders(tmp_path):
    rows = [(f"{c}/{i}.jpg", c, c) for c in "xy" for i in range(5)]
    worse = [(p, y, "x") for p, y, _ in rows]
    _write(tmp_path / "run" / "evaluation" / "predictions.csv", worse)
    _write(tmp_path / "tune" / "best_run" / "evaluation" / "predictions.csv", rows)
    c = compare(tmp_path / "run", tmp_path / "tune", resamples=200)
    assert (c.accuracy_a, c.accuracy_b, c.only_b_right) == (0.5, 1.0, 5)
    same = compare(tmp_path / "run" / "evaluation", tmp_path / "run" / "evaluation" / "predictions.csv", resamples=200)
    assert same.accuracy_difference.value == 0.0


def test_compare_refuses_other_images_and_missing_evaluations(tmp_path):
    a = _write(tmp_path / "a.csv", [("x/1.jpg", "x", "x"), ("y/2.jpg", "y", "y")])
    b = _write(tmp_path / "b.csv", [("x/1.jpg", "x", "x"), ("y/3.jpg", "y", "y")])
    with pytest.raises(DataError, match="different test images .*--split-file"):
        compare(a, b)
    relabelled = _write(tmp_path / "c.csv", [("x/1.jpg", "y", "x"), ("y/2.jpg", "y", "y")])
    with pytest.raises(DataError, match="label 'x/1.jpg' differently"):
        compare(a, relabelled)
    with pytest.raises(DataError, match="holds no val images: .*--split val"):
        compare(a, a, split="val")
    (tmp_path / "run").mkdir()
    with pytest.raises(RunFolderError, match="kclassify evaluate"):
        compare(tmp_path / "run", a)
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "best_hparams.yaml").write_text("hparams: {}\n")
    with pytest.raises(RunFolderError, match="--then-fit"):  # a search whose best settings were never trained
        compare(tmp_path / "search", a)
    val_only = _write(tmp_path / "val.csv", [("x/1.jpg", "x", "x")], split="val")
    with pytest.raises(DataError, match="holds no test images: evaluate it on that split first"):
        compare(a, val_only)
    twice = _write(tmp_path / "twice.csv", [("x/1.jpg", "x", "x"), ("x/1.jpg", "x", "y")])
    with pytest.raises(DataError, match="lists 'x/1.jpg' twice"):
        compare(a, twice)
    binary = tmp_path / "model.keras"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00\x80" * 64)
    with pytest.raises(DataError, match="not a predictions.csv"):
        compare(a, binary)
    with pytest.raises(ConfigError, match="--resamples must be at least 100"):
        compare(a, a, resamples=10)


def test_cli_compare_prints_the_comparison_without_tensorflow(tmp_path):
    rows = [(f"{c}/{i}.jpg", c, c) for c in "xy" for i in range(10)]
    a = _write(tmp_path / "a" / "predictions.csv", [(p, y, "x") for p, y, _ in rows])
    b = _write(tmp_path / "b" / "predictions.csv", rows)
    code = ("import sys\nfrom kclassify.cli import main\nrc = main(sys.argv[1:])\n"
            "assert 'tensorflow' not in sys.modules, 'TF imported'\nsys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "compare", str(a), str(b), "--json", "--resamples", "500"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["accuracy_a"], result["accuracy_b"], result["only_b_right"]) == (0.5, 1.0, 10)
    assert result["mcnemar_p"] == pytest.approx(2 / 2**10)  # 10 discordant images, all one way
    text = subprocess.run([sys.executable, "-m", "kclassify", "compare", str(a.parent), str(b.parent)],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "+50.0 points" in text.stdout
    refused = subprocess.run([sys.executable, "-m", "kclassify", "compare", str(a), str(tmp_path / "nowhere")],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "does not exist" in refused.stderr
