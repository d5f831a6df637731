"""Calibration: expected calibration error, the reliability diagram's bins, and temperature scaling.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") divides the
logits by one scalar T fitted to minimise the negative log-likelihood of held-out labels; it never
changes which class wins, so accuracy and the confusion matrix stay as they are. It is fitted on
the validation split and judged on the split being evaluated.
"""

from __future__ import annotations

import numpy as np

from ..inference.calibration import EPS, apply_temperature

BINS = 15  # the customary number of equal-width confidence bins for ECE
T_RANGE = (0.05, 20.0)
# Misclassified fitting images a temperature needs. Errors are what tell over- from under-confidence:
# on a split the model gets (almost) all right, the likelihood only grows as T shrinks, so T runs to
# the bottom of T_RANGE and every served probability to 0 or 1 (seen on the built-in digits; measured:
# docs/benchmarks.md, "Command 1 (the README's first command)"). With fewer, T stays 1 and the report says why.
MIN_ERRORS = 5


def negative_log_likelihood(y_true, probabilities) -> float:
    p = np.asarray(probabilities, np.float64)
    picked = p[np.arange(len(p)), np.asarray(y_true, np.int64)]
    return float(-np.mean(np.log(np.clip(picked, EPS, 1.0))))


def reliability_bins(y_true, probabilities, bins: int = BINS) -> list[dict]:
    """Equal-width bins of top-class confidence: for each, how many images, mean confidence, accuracy."""
    p = np.asarray(probabilities, np.float64)
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # right-closed bins, the first also holding 0: confidence 1.0 lands in the last bin
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        out.append({
            "low": float(edges[b]), "high": float(edges[b + 1]), "count": n,
            "confidence": float(confidence[members].mean()) if n else None,
            "accuracy": float(correct[members].mean()) if n else None,
        })
    return out


def expected_calibration_error(y_true, probabilities, bins: int = BINS) -> float:
    """Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width top-confidence bins."""
    table = reliability_bins(y_true, probabilities, bins)
    total = sum(b["count"] for b in table)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in table if b["count"]))


def fit_temperature(y_true, probabilities) -> float:
    """The T in :data:`T_RANGE` minimising the NLL of ``softmax(log p / T)`` (bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, np.int64)
    p = np.asarray(probabilities, np.float64)

    def nll(log_t: float) -> float:
        return negative_log_likelihood(y, apply_temperature(p, float(np.exp(log_t))))

    found = minimize_scalar(nll, bounds=np.log(T_RANGE), method="bounded", options={"xatol": 1e-4})
    t = float(np.exp(found.x))
    return t if nll(np.log(t)) <= nll(0.0) else 1.0  # never worse than no scaling on the data it was fitted on


def calibration_report(y_eval, p_eval, y_fit=None, p_fit=None, fitted_on: str | None = None) -> dict:
    """ECE and NLL of the evaluated images before and after a temperature fitted on (y_fit, p_fit).

    With no fitting data, or fewer than :data:`MIN_ERRORS` misclassified fitting images, the
    temperature stays 1 and ``not_fitted`` says why (None when it was fitted).
    """
    fitted = y_fit is not None and len(y_fit) > 0
    reason = None if fitted else "no validation images to fit a temperature"
    if fitted:
        errors = int(np.sum(np.argmax(np.asarray(p_fit), axis=1) != np.asarray(y_fit)))
        if errors < MIN_ERRORS:
            fitted, reason = False, (f"{errors} of the {len(y_fit)} {fitted_on or 'fitting'} images misclassified: too "
                                     f"few to tell over- from under-confidence (a temperature needs at least "
                                     f"{MIN_ERRORS}); kept 1")
    t = fit_temperature(y_fit, p_fit) if fitted else 1.0
    scaled = apply_temperature(p_eval, t)
    return {
        "temperature": t,
        "fitted_on": fitted_on if fitted else None,
        "fitted_images": int(len(y_fit)) if fitted else 0,
        "not_fitted": reason,
        "bins": BINS,
        "ece": expected_calibration_error(y_eval, p_eval),
        "ece_calibrated": expected_calibration_error(y_eval, scaled),
        "log_loss": negative_log_likelihood(y_eval, p_eval),
        "log_loss_calibrated": negative_log_likelihood(y_eval, scaled),
        "reliability": reliability_bins(y_eval, p_eval),
        "reliability_calibrated": reliability_bins(y_eval, scaled),
    }
