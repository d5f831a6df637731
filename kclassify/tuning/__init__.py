"""Tuning layer: search spaces (TensorFlow-free) and, with ``kclassify tune``, the KerasTuner search."""

from .space import Entry, SearchSpace, load_space, to_hyperparameters

__all__ = ["Entry", "SearchSpace", "load_space", "to_hyperparameters"]
