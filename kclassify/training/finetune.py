"""Transfer learning as the Keras guide does it: train the head on a frozen backbone, then
unfreeze the top of the backbone (BatchNorm stays frozen) at a smaller learning rate.

A fit is a list of :class:`Phase`; from-scratch training is a single phase.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import keras

from ..config import Config
from ..errors import ConfigError
from ..models import get as get_backbone
from ..models.build import backbone_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    name: str  # "head" or "finetune" or "train"
    start: int  # first epoch (0-based, continuous over phases)
    end: int  # one past the last epoch
    lr_factor: float
    open: bool = False  # its end is fit's time budget's (``TimeBudget`` sets a cosine's learning rate)


def plan_phases(cfg: Config) -> list[Phase]:
    """Two phases when the backbone starts from pretrained weights, else one."""
    epochs = cfg.train.epochs
    if cfg.model.weights == "none":
        return [Phase("train", 0, epochs, 1.0)]
    head = cfg.train.head_epochs
    if head is None:
        head = max(1, math.ceil(0.25 * epochs)) if epochs > 1 else epochs
    head = min(head, epochs)
    phases = [Phase("head", 0, head, 1.0)] if head else []
    if head < epochs:
        phases.append(Phase("finetune", head, epochs, cfg.train.finetune_lr_factor))
    return phases


def _first_unfrozen(layers: list, unfreeze: str, top_block: str | None = None) -> int:
    """Index of the first backbone layer to train.

    Args:
        unfreeze: 'all', 'top' (the registry's block for this backbone, else the top
            quarter), a layer count ('20'), a fraction ('0.3') or a layer/block name.
    """
    n = len(layers)
    if unfreeze == "all":
        return 0
    if unfreeze == "top":
        unfreeze = top_block or "0.25"
    if unfreeze.isdigit():
        return max(0, n - int(unfreeze))
    try:
        fraction = float(unfreeze)
    except ValueError:
        names = [layer.name for layer in layers]
        matches = [i for i, name in enumerate(names) if name == unfreeze or name.startswith(unfreeze)]
        if not matches:
            raise ConfigError(
                f"--unfreeze {unfreeze!r} names no layer of the backbone. Expected 'all', a count, a "
                f"fraction in (0, 1], or a layer/block name such as {names[n // 2]!r} or {names[-3]!r}."
            ) from None
        return matches[0]
    if not 0 < fraction <= 1:
        raise ConfigError(f"--unfreeze fraction must lie in (0, 1]; received {unfreeze!r}.")
    return n - max(1, round(fraction * n))


def freeze_backbone(model) -> None:
    backbone_of(model).trainable = False


def unfreeze_top(model, unfreeze: str, top_block: str | None = None) -> int:
    """Make the top of the backbone trainable, BatchNorm excepted; return how many layers train."""
    base = backbone_of(model)
    base.trainable = True
    start = _first_unfrozen(base.layers, unfreeze, top_block)
    count = 0
    for i, layer in enumerate(base.layers):
        # BatchNorm keeps its ImageNet statistics and scale: the backbone runs with
        # training=False, and a small fine-tuning set would wreck them otherwise.
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        count += bool(layer.trainable and layer.weights)
    log.info("fine-tuning %d of %d backbone layers (from %s)", count, len(base.layers),
             base.layers[start].name)
    return count


def prepare_phase(model, phase: Phase, cfg: Config) -> None:
    """Set which layers train in ``phase``."""
    if phase.name == "head":
        freeze_backbone(model)
    elif phase.name == "finetune":
        unfreeze_top(model, cfg.train.unfreeze, get_backbone(cfg.model.backbone).unfreeze_from)
