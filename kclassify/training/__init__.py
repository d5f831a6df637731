"""Training layer: optimizers, losses, callbacks, distribution and ``fit`` (imports TensorFlow)."""

from .fit import FitResult, fit

__all__ = ["FitResult", "fit"]
