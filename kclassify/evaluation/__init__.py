"""Evaluation: every metric, calibration, plots, suspect labels and one HTML report (predicts through
:mod:`kclassify.inference`).

``evaluate(run_or_model)`` writes report.json, report.html, predictions.csv, suspect_labels.csv,
calibration.json and plots/ into one folder; the metric functions work on plain arrays too.
"""

from ..runs import find_run
from .calibration import expected_calibration_error, fit_temperature, reliability_bins
from .compare import Comparison, compare
from .evaluate import EvaluationResult, evaluate
from .metrics import best_f1_threshold, classification_metrics, headline, most_confused
from .suspects import find_suspects

__all__ = [
    "Comparison", "EvaluationResult", "best_f1_threshold", "classification_metrics", "compare", "evaluate",
    "expected_calibration_error", "find_run", "find_suspects", "fit_temperature", "headline", "most_confused",
    "reliability_bins",
]
