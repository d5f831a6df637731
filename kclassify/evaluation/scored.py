"""Predicted images: what ``evaluate`` and cross-validation hand to the metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Scored:
    """Predicted images: their records, true class indices and probabilities, aligned."""

    records: list
    y: np.ndarray
    probs: np.ndarray

    def where(self, keep) -> "Scored":
        mask = np.array([keep(r) for r in self.records], bool)
        return Scored([r for r, k in zip(self.records, mask) if k], self.y[mask], self.probs[mask])

    def __len__(self) -> int:
        return len(self.records)
