"""The training recipe: the one way kclassify turns settings and data into a trained classifier.

``fit`` and every tuning trial call these functions, so a trial and a fit with the same
settings seed the same way, read the same batches, build the same model (preprocessing
adapted, transfer head loaded, precision set), and train the same phases (frozen head, then
fine-tuning) with the same optimizer, schedule, loss, metrics and class weights. Each caller
adds only its own bookkeeping: ``fit`` its run folder, checkpoints and resume; a trial
KerasTuner's callbacks, its Hyperband rung and the continuation of an earlier rung.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf

from ..config import Config, from_yaml_file
from ..data import PreparedData
from ..data.augment import build_augmentation, build_mixing
from ..data.phone import typical_side
from ..data.pipeline import batches, mixed_resizes
from ..models import get as get_backbone
from ..models.build import adapt_preprocessing, classifier_for, default_input_scale, transfer_head
from ..upstream import reset_initial_epoch
from . import averaging, progressive
from .distill import DistillationLoss, OnLabels, load_teachers, with_teacher_targets
from .finetune import Phase, plan_phases, prepare_phase
from .losses import build_loss, class_weights
from .optimizers import build_optimizer

log = logging.getLogger(__name__)

# (split, image size) -> decoded (uint8 image, label) pairs, or None when the split is empty.
# fit caches them in its run folder; a search decodes each split once for all its trials.
ImagesFn = Callable[..., "tf.data.Dataset | None"]  # (split, size, resize="kclassify")
# (model, phase, first epoch, end epoch) -> that stretch's history
PhaseFit = Callable[[keras.Model, Phase, int, int], dict]


@dataclass
class Recipe:
    """One configuration made concrete: its data pipelines, phases and monitored metric."""

    cfg: Config  # image_size resolved
    data: PreparedData
    datasets: dict  # "train", "adapt" and, when there are validation images, "val"
    phases: list[Phase]
    monitor: str
    steps: int  # training steps per epoch
    teachers: list = dataclasses.field(default_factory=list)  # distill.Teacher, from --teacher
    side: tf.Variable | None = None  # --progressive-resize: the side training batches are resized to
    sides: list[int] = dataclasses.field(default_factory=list)  # and its stages' sides

    @property
    def class_weight(self) -> dict[int, float] | None:
        """Keras' ``class_weight``; None when distilling (the pipeline weighs the images itself)."""
        if self.teachers:
            return None
        return class_weights(self.cfg.train.class_weight, self.data.subset("train")[1])

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)

    def final_batches(self) -> tf.data.Dataset:
        """The training batches at the size the model is saved at (progressive resizing's last stage, also
        for a run whose budget or resume stopped before it): what the saved average's BatchNorm statistics
        are recomputed over (:func:`kclassify.training.averaging.finish`)."""
        if self.side is not None:
            self.side.assign(self.sides[-1])
        return self.datasets["train"]


def resolve(cfg: Config) -> Config:
    """Settings with what the backbone decides filled in: the image size, and the input scale from it."""
    if not cfg.data.image_size:
        cfg = cfg.replace(image_size=get_backbone(cfg.model.backbone).default_size)
    if cfg.model.input_scale is None:
        cfg = cfg.replace(input_scale=default_input_scale(cfg.data.image_size, typical_side(cfg.data.data)))
    return cfg


def input_size(cfg: Config) -> int:
    """The model's input in pixels (what images are decoded to): ``--image-size`` times ``--input-scale``."""
    cfg = resolve(cfg)
    return int(cfg.data.image_size) * int(cfg.model.input_scale)


def make_recipe(cfg: Config, data: PreparedData, images: ImagesFn, replicas: int = 1) -> Recipe:
    """Pipelines, phases and monitor for ``cfg`` over decoded images from ``images``."""
    cfg = resolve(cfg)
    size, batch, seed, n = input_size(cfg), cfg.train.batch_size, cfg.train.seed, len(data.classes)
    train = images("train", size)
    if cfg.data.phone_resize > 0:
        train = mixed_resizes(train, images("train", size, "mediapipe"), cfg.data.phone_resize, seed)
    augment = build_augmentation(cfg.data.augment, cfg.data.flip, seed, cfg.data.augment_policy)
    mix = build_mixing(cfg.data.mix, cfg.data.mix_alpha, seed)
    teachers = load_teachers(cfg.train.teacher, data.classes, teacher_policy(cfg.train.mixed_precision))
    sides = _progressive_sides(cfg)
    side = tf.Variable(sides[0], trainable=False, dtype=tf.int32, name="train_side") if sides else None
    datasets = {
        "train": batches(train, n, batch, training=True, seed=seed, augment=augment, mix=mix,
                         targets=_distill_targets(teachers, class_weights(cfg.train.class_weight, data.subset("train")[1]),
                                                  n),
                         replicas=replicas, side=side),
        # Plain training images for Normalization.adapt; its pass fills the shared decode cache.
        "adapt": train.batch(batch).map(lambda x, y: tf.cast(x, tf.float32)),
    }
    val = images("val", size)
    if val is not None:
        datasets["val"] = batches(val, n, batch, training=False, replicas=replicas)
    steps = int(tf.data.experimental.cardinality(datasets["train"]))
    return Recipe(cfg, data, datasets, plan_phases(cfg), monitor_for(cfg, "val" in datasets), max(steps, 1), teachers,
                  side, sides)


def _progressive_sides(cfg: Config) -> list[int]:
    """The stages' input sides of ``--progressive-resize`` (empty when off), multiples of 4x the input scale."""
    fraction, k = cfg.train.progressive_resize, int(cfg.model.input_scale)
    if not fraction or fraction >= 1:
        return []
    spec = get_backbone(cfg.model.backbone)
    return progressive.stage_sides(input_size(cfg), fraction, multiple=4 * k, smallest=spec.min_size * k)


def _distill_targets(teachers: list, weights: dict[int, float] | None, num_classes: int):
    """Training targets ``[labels | teachers' probabilities]`` (None without teachers); with class weights,
    ``(targets, per-image weights)`` from the labels half, which Keras' ``class_weight`` cannot read."""
    if not teachers:
        return None
    targets = with_teacher_targets(teachers)
    if not weights:
        return targets
    table = tf.constant([weights.get(c, 0.0) for c in range(num_classes)], tf.float32)
    return lambda x, y: (targets(x, y), tf.gather(table, tf.argmax(y, axis=-1)))


def monitor_for(cfg: Config, has_val: bool) -> str:
    monitor = cfg.train.monitor
    if monitor.startswith("val_") and not has_val:
        log.warning("no validation images: monitoring %s instead of %s", monitor[4:], monitor)
        return monitor[4:]
    return monitor


def seed_everything(seed: int, deterministic: bool = False) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bfloat16 in AMX tiles (Intel Sapphire Rapids and later; Linux flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        return False


def policy_for(mixed: bool | None) -> str:
    """The Keras dtype policy of ``--mixed-precision``: on, off, or None (auto).

    Auto computes in bfloat16 only where it was measured to pay: a CPU with AMX and no GPU.
    There, oneDNN trains small_cnn markedly faster (whole fits gain less, the augmentation sharing
    the cores) with scores equal within their noise. A CPU with ``avx512_bf16`` but no AMX (an AMD
    EPYC, Zen 5, measured the same way) gains too little to change what trains; it stays float32
    (measured: docs/benchmarks.md, "Mixed precision (bfloat16 on CPUs)"). Without either, bfloat16
    is emulated (slower than float32). On a GPU float16 stays opt-in until it is
    measured there.
    """
    gpu = bool(tf.config.list_logical_devices("GPU"))
    if mixed is None:  # oneDNN turned off (TF_ENABLE_ONEDNN_OPTS=0) leaves bfloat16 to slow Eigen kernels
        mixed = not gpu and cpu_has_amx() and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"
    if not mixed:
        return "float32"
    return "mixed_float16" if gpu else "mixed_bfloat16"


def teacher_policy(mixed: bool | None) -> str:
    """The dtype policy ``fit --teacher``'s Keras teachers compute under: the student's where it is bfloat16
    on a CPU with AMX, else float32.

    Teachers run in the tf.data pipeline, on the CPU whatever trains the student: float16 (a GPU
    student's mixed policy) would be emulated there, and so would bfloat16 forced on a CPU without AMX.
    """
    policy = policy_for(mixed)
    return policy if policy == "mixed_bfloat16" and cpu_has_amx() else "float32"


def resolve_precision(cfg: Config, started: Path | None = None) -> Config:
    """``cfg`` with ``--mixed-precision`` auto (None) made concrete, so config.yaml says what trained.

    A run or search resumed from a folder keeps what its ``started`` config.yaml holds (e.g.
    ``false`` from before auto existed, or from a machine without AMX); a new one takes
    :func:`policy_for`'s choice on this machine.
    """
    if cfg.train.mixed_precision is not None:
        return cfg
    before = from_yaml_file(started).train.mixed_precision if started and started.is_file() else None
    return cfg.replace(mixed_precision=before if before is not None else policy_for(None) != "float32")


@contextlib.contextmanager
def precision(mixed: bool | None):
    """The dtype policy of ``--mixed-precision`` (see :func:`policy_for`) while a model is built."""
    policy = policy_for(mixed)
    previous = keras.mixed_precision.global_policy().name
    if policy == previous:
        yield
        return
    keras.mixed_precision.set_global_policy(policy)
    log.info("mixed precision: %s", policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def metrics(num_classes: int) -> list:
    """What every model reports per epoch, in history.csv and TensorBoard (and ``tune --objective``).

    ``auc`` is the macro one-vs-rest ROC AUC (one curve per class, averaged) and ``f1`` the macro
    F1 of the arg-max predictions, as ``evaluate`` reports them at the end; the labels reach the
    metrics one-hot, which both need. Keras averages over every class, so a class with no image
    in a tiny validation split counts as 0 there, where ``evaluate`` (scikit-learn) leaves it out.
    """
    return [keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc", multi_label=True, num_labels=num_classes),
            keras.metrics.F1Score(average="macro", name="f1")]


def build_model(recipe: Recipe):
    """The classifier of ``recipe``: preprocessing adapted on its training images, transfer head loaded."""
    m, cfg = recipe.cfg.model, recipe.cfg
    model = classifier_for(m, recipe.num_classes, cfg.data.image_size, any_size=recipe.side is not None)
    if adapt_preprocessing(model, recipe.datasets["adapt"]):
        log.info("adapted input normalization on %d training images", len(recipe.data.subset("train")[0]))
    if transfer_head(model, m.weights, recipe.data.classes):
        log.info("same classes as %s: its head is loaded too", m.weights)
    return model


def compile_phase(model, recipe: Recipe, phase: Phase) -> None:
    """Freeze or unfreeze for ``phase``, then compile with the phase's learning rate and schedule."""
    prepare_phase(model, phase, recipe.cfg)
    train_cfg = recipe.cfg.train
    phase_cfg = dataclasses.replace(
        train_cfg, lr=train_cfg.lr * phase.lr_factor, epochs=phase.end - phase.start,
        warmup_epochs=train_cfg.warmup_epochs if phase.start == 0 else 0.0,
        # An open phase's length is unknown when it compiles: TimeBudget sets its cosine's rate per step.
        schedule="constant" if phase.open and train_cfg.schedule == "cosine" else train_cfg.schedule,
    )
    loss, scores = build_loss(train_cfg), metrics(recipe.num_classes)
    if recipe.teachers:  # targets are [labels | teachers' probabilities]: the loss splits them, metrics read labels
        loss = DistillationLoss(loss, recipe.num_classes, train_cfg.distill_alpha, train_cfg.distill_temperature)
        scores = [OnLabels(m, recipe.num_classes) for m in scores]
    model.compile(optimizer=build_optimizer(phase_cfg, recipe.steps), loss=loss, metrics=scores)


def train(model, recipe: Recipe, fit_phase: PhaseFit, *, start: int = 0, end: int | None = None,
          skip: Callable[[Phase], bool] = lambda phase: False) -> dict[str, list]:
    """Train epochs ``start..end-1`` through the phases they fall in, as one continuous history.

    A stretch that starts inside a phase (a Hyperband continuation) goes on along that
    phase's schedule: the optimizer's step counter is set to where the phase had got to.
    """
    end = recipe.cfg.train.epochs if end is None else end
    history: dict[str, list] = {}
    for phase in recipe.phases:
        first, last = max(start, phase.start), min(end, phase.end)
        if first >= last or skip(phase):
            continue
        compile_phase(model, recipe, phase)
        if first > phase.start:
            model.optimizer.iterations.assign((first - phase.start) * recipe.steps)
        if len(recipe.phases) > 1:
            log.info("phase %s: epochs %d-%d", phase.name, first + 1, last)
        for key, values in fit_phase(model, phase, first, last).items():
            history.setdefault(key, []).extend(values)
    return history


def keras_fit(recipe: Recipe, callbacks: Callable[[Phase], list], verbose="auto",
              total_epochs: Callable[[], int] | None = None) -> PhaseFit:
    """A :data:`PhaseFit` running ``model.fit`` on the recipe's data with ``callbacks(phase)``.

    ``total_epochs``: the schedule's length, which progressive resizing stages by (default: ``--epochs``;
    a time budget's planned epochs under ``--time-budget``).
    """

    def phase_callbacks(phase: Phase) -> list:
        cbs = callbacks(phase)
        if recipe.cfg.train.ema > 0:
            cbs = averaging.wrap(cbs)
        if recipe.side is not None:  # first: the loggers see the side it sets
            cbs = [progressive.ProgressiveResize(recipe.side, recipe.sides,
                                                 total_epochs or (lambda: recipe.cfg.train.epochs)), *cbs]
        return cbs

    def run(model, phase: Phase, first: int, last: int) -> dict:
        reset_initial_epoch(model)  # each phase's fit starts clean; its backup sets it anew
        return model.fit(
            recipe.datasets["train"], validation_data=recipe.datasets.get("val"), initial_epoch=first,
            epochs=last, callbacks=phase_callbacks(phase), class_weight=recipe.class_weight,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=verbose,
        ).history

    return run
