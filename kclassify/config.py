"""Typed, grouped settings and their YAML form.

Settings live in three dataclasses (:class:`DataConfig`, :class:`ModelConfig`,
:class:`TrainConfig`) grouped in :class:`Config`. The field list is the single
source of truth: the CLI builds its flags from it, YAML files are checked against
it, and ``config.yaml`` in every run folder is written from it.

Precedence, lowest first: defaults < ``--config`` YAML < ``--hparams`` YAML < flags.
A YAML file may be grouped (``train: {lr: 0.01}``, as written in run folders) or
flat (``lr: 0.01``, as written by ``kclassify tune``); flat names are unique across
groups. Unknown keys and values outside a field's choices are :class:`ConfigError`.

This module must not import TensorFlow: the CLI reads it to build ``--help``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, did_you_mean

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential", "step", "plateau")
LOSSES = ("crossentropy", "focal", "mse")
CLASS_WEIGHTS = ("none", "balanced")
AUDIT_MODES = ("quick", "full")
CACHE_MODES = ("auto", "memory", "disk", "none")
FLIPS = ("horizontal", "vertical", "both", "none")
MIXES = ("none", "mixup", "cutmix")  # kclassify.data.augment.MIXES builds each
AUGMENT_POLICIES = ("basic", "randaugment", "augmix")  # kclassify.data.augment.AUGMENT_POLICIES builds each
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
KEEP_RULES = ("best", "last")  # kclassify.training.fit.KEEP_RULES says what each keeps
POOLINGS = ("avg", "max")
ACTIVATIONS = ("relu", "leaky_relu", "prelu", "elu", "gelu", "tanh", "sigmoid")


def _opt(default, help, choices=None, flag=None, low=None, high=None):
    """A dataclass field with CLI help, optional choices and numeric bounds."""
    meta = {"help": help, "choices": choices, "flag": flag, "low": low, "high": high}
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    data: str = _opt(
        "builtin:digits",
        "class-folder dir, pre-split dir (train/val/test), CSV 'path,label', "
        "tfds:NAME or builtin:digits",
    )
    image_size: int | None = _opt(
        None, "square input size in pixels (default: the backbone's)", low=8
    )
    val_fraction: float = _opt(0.1, "share of images for validation", low=0.0, high=0.9)
    test_fraction: float = _opt(0.1, "share of images for the test split", low=0.0, high=0.9)
    split_file: str | None = _opt(None, "reuse this split.csv exactly (path,label,split)")
    augment: float = _opt(
        1.0, "augmentation strength for training batches; 0 turns it off", low=0.0, high=5.0
    )
    augment_policy: str = _opt(
        "basic", "what augments training batches after the flip: basic (rotation, zoom, shift, contrast), "
        "randaugment or augmix (Keras' layers); --augment scales each", AUGMENT_POLICIES)
    flip: str = _opt("horizontal", "random flips during augmentation", FLIPS)
    mix: str = _opt(
        "none", "mix pairs of training images and their labels: mixup blends whole images, cutmix pastes "
        "a patch of one into the other", MIXES
    )
    mix_alpha: float = _opt(
        0.4, "Beta(alpha, alpha) draws each pair's share (mixup's blend, cutmix's patch area): small alpha "
        "mixes little, 1 mixes uniformly", low=0.01, high=1.0
    )
    phone_resize: float = _opt(
        0.5, "share of training images resized as a phone does (MediaPipe: bilinear without antialiasing), "
        "drawn afresh every epoch; the rest are resized with antialiasing as evaluation does", low=0.0, high=1.0
    )
    cache: str = _opt(
        "auto", "cache decoded images: auto picks memory when they fit, else a file", CACHE_MODES
    )
    min_images: int = _opt(
        2, "fail if a class keeps fewer usable images than this", low=1
    )
    audit: str = _opt(
        "quick", "quick: exclude files that do not decode; full: also run `kclassify audit` into the run folder "
        "and stop when test images copy training images", AUDIT_MODES
    )


@dataclass
class ModelConfig:
    backbone: str = _opt("small_cnn", "backbone name from the registry (kclassify models)")
    weights: str = _opt(
        "none", "backbone weights: none, imagenet, or a local .weights.h5 file"
    )
    dropout: float = _opt(0.2, "dropout before the classifier", low=0.0, high=0.95)
    pooling: str = _opt("avg", "global pooling of the backbone's features", POOLINGS)
    hidden_units: int = _opt(0, "units of an optional hidden dense layer in the head (0: none)", low=0)
    hidden_activation: str = _opt("relu", "activation of the head's hidden layer", ACTIVATIONS)
    activation: str = _opt("relu", "activation inside small_cnn and alexnet", ACTIVATIONS)
    batch_norm: bool = _opt(True, "BatchNorm after each convolution of alexnet")
    width: float = _opt(1.0, "channel multiplier of small_cnn's blocks (2: about 4x the compute)", low=0.125, high=8.0)
    depth: int = _opt(1, "3x3 convolutions per block of small_cnn (2: VGG-style pairs)", low=1, high=4)
    input_scale: int | None = _opt(
        None, "the model takes photos at K times --image-size and averages each KxK block first, inside the model "
        "(so on a phone too): a phone's resize without antialiasing to the larger input loses little. Default: "
        "2 where the photos are at least twice --image-size and the input stays within 256 px, else 1", low=1, high=8)
    bn_momentum: float | None = _opt(
        None, "moving-average momentum of every BatchNorm layer (default: the backbone's own, 0.9 in small_cnn "
        "and alexnet; Keras' 0.99 leaves short from-scratch runs with stale statistics)", low=0.0, high=1.0)


@dataclass
class TrainConfig:
    epochs: int = _opt(20, "number of epochs", low=1)
    batch_size: int = _opt(32, "global batch size", low=1)
    optimizer: str = _opt("adam", "optimizer", OPTIMIZERS)
    lr: float = _opt(1e-3, "base learning rate", low=0.0, high=10.0)
    schedule: str = _opt("cosine", "learning-rate schedule (cosine: decays to 0 over the run)", SCHEDULES)
    warmup_epochs: float = _opt(0.0, "linear warm-up epochs (cosine schedule)", low=0.0)
    decay_rate: float = _opt(
        0.1, "lr multiplier per --decay-epochs (exponential, step) or on plateau",
        low=0.0, high=1.0,
    )
    decay_epochs: float = _opt(10.0, "epochs per decay (exponential, step)", low=0.01)
    plateau_patience: int = _opt(3, "epochs without improvement before lowering lr", low=1)
    momentum: float = _opt(0.9, "momentum for momentum/nesterov/rmsprop", low=0.0, high=1.0)
    weight_decay: float = _opt(0.0, "decoupled weight decay", low=0.0)
    clipnorm: float | None = _opt(None, "clip each gradient to this norm", low=0.0)
    clipvalue: float | None = _opt(None, "clip gradient values to +-this", low=0.0)
    loss: str = _opt("crossentropy", "loss function", LOSSES)
    label_smoothing: float = _opt(0.0, "label smoothing (crossentropy, focal)", low=0.0, high=0.5)
    focal_gamma: float = _opt(2.0, "focusing parameter of the focal loss", low=0.0)
    class_weight: str = _opt("none", "weight classes by inverse frequency", CLASS_WEIGHTS)
    teacher: str | None = _opt(
        None, "distil from these models (comma-separated run folders or model files with the same classes; several "
        "are averaged): each sees the student's augmented batch")
    distill_alpha: float = _opt(
        0.5, "with --teacher: weight of the teacher's softened probabilities in the loss (the labels get 1 - alpha)",
        low=0.0, high=1.0)
    distill_temperature: float = _opt(
        2.0, "with --teacher: temperature that softens teacher and student before their KL divergence", low=0.1,
        high=20.0)
    ema: float = _opt(
        0.0, "average the weights: an exponential moving average with this momentum (e.g. 0.999; Keras' use_ema), "
        "which validation, checkpoints and the saved model use (BatchNorm statistics: averaged each epoch, recomputed for "
        "the saved model); 0: off",
        low=0.0, high=0.99999)
    progressive_resize: float = _opt(
        0.0, "progressive resizing: the first quarter of the schedule trains on images this fraction of the input "
        "size, growing in 4 stages to the full size for the last quarter (e.g. 0.5); validation and the saved model "
        "at the full size; 0: off", low=0.0, high=1.0)
    early_stopping: int = _opt(
        0, "stop after this many epochs without improvement (0: off)", low=0
    )
    monitor: str = _opt(
        "val_loss", "metric for early stopping, plateau and the best checkpoint"
    )
    keep: str = _opt(
        "last", "the weights the run saves: last (the final epoch's: the end of the decayed schedule, or the average "
        "with --ema; it scored higher than best on intel_scenes at every budget measured, docs/benchmarks.md) or "
        "best (the epoch of the best --monitor; training loss without validation images)", KEEP_RULES)
    head_epochs: int | None = _opt(
        None, "epochs of the head-only phase with pretrained weights (default: a quarter)", low=0
    )
    unfreeze: str = _opt(
        "all", "what fine-tuning unfreezes: all, top (the backbone's last block), a layer count, "
        "a fraction (0.3) or a layer name"
    )
    finetune_lr_factor: float = _opt(0.1, "fine-tuning learning rate = lr x this", low=0.0, high=10.0)
    mixed_precision: bool | None = _opt(
        None, "compute in float16 on GPU, bfloat16 on CPU, with float32 weights, softmax and saved model (default, auto: on "
        "where no GPU is visible and the CPU has AMX bfloat16 units, where it trained faster; off elsewhere; "
        "measured: docs/benchmarks.md, \"Mixed precision (bfloat16 on CPUs)\")")
    seed: int = _opt(42, "seed for split, shuffling, augmentation and initialisation")
    deterministic: bool = _opt(False, "enable TensorFlow op determinism (slower)")
    strategy: str = _opt("auto", "tf.distribute strategy", STRATEGIES)


GROUPS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {g: dataclasses.asdict(getattr(self, g)) for g in GROUPS}

    def flat(self) -> dict[str, Any]:
        return {k: v for group in self.to_dict().values() for k, v in group.items()}

    def replace(self, **values) -> "Config":
        """A copy with flat settings replaced (validated)."""
        return build_config(self.flat(), values)


def settings_changes(saved: str | Path, current: Config) -> str:
    """What differs between the settings a run or search was started with (its ``config.yaml``) and ``current``.

    One ``name: old -> new`` per changed setting, sorted, comma-separated; empty when none changed.
    ``split_file`` is left out: a resumed run or search always reuses its own ``split.csv``.
    """
    previous = from_yaml_file(saved).flat()
    changed = {k: (previous.get(k), v) for k, v in current.flat().items() if previous.get(k) != v}
    changed.pop("split_file", None)
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))


def fields_by_name() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every setting's flat name -> (group, dataclass field)."""
    out = {}
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            out[f.name] = (group, f)
    return out


def _base_type(f: dataclasses.Field):
    hints = typing.get_type_hints(GROUPS[_group_of(f)])
    t = hints[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return (args[0] if args else t), type(None) in typing.get_args(t)


def _group_of(f: dataclasses.Field) -> str:
    for group, cls in GROUPS.items():
        if f.name in {x.name for x in dataclasses.fields(cls)}:
            return group
    raise KeyError(f.name)


def coerce(name: str, value: Any) -> Any:
    """Convert ``value`` to the type of setting ``name`` and check its range."""
    table = fields_by_name()
    if name not in table:
        raise ConfigError(
            f"Unknown setting {name!r}.{did_you_mean(name, table)} "
            f"Valid settings: {', '.join(sorted(table))}."
        )
    f = table[name][1]
    base, optional = _base_type(f)
    # an optional switch's None is "auto" (mixed_precision: the machine decides), and may say so
    auto = ("auto",) if base is bool else ()
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "", *auto)):
        if optional:
            return None
        raise ConfigError(f"Setting {name!r} needs a value; received None.")
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError(value)
                value = value.lower() in ("true", "yes", "1")
            value = bool(value)
        elif base is int:
            # YAML and NumPy give floats/np.int64; Keras wants a plain int.
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            value = int(value)
        elif base is float:
            value = float(value)
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"Setting {name!r} expects {base.__name__}; received {value!r}."
        ) from None
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(
            f"Unknown value {value!r} for {name!r}.{did_you_mean(value, meta['choices'])} "
            f"Valid values: {', '.join(meta['choices'])}."
        )
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"Setting {name!r} must lie in {bounds}; received {value!r}.")
    return value


def flatten_yaml(doc: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """Accept grouped (``train: {lr: ..}``) or flat YAML; return flat settings."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping of settings; received {type(doc).__name__}."
        )
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in GROUPS and isinstance(value, Mapping):
            valid = {f.name for f in dataclasses.fields(GROUPS[key])}
            for k, v in value.items():
                if k not in valid:
                    raise ConfigError(
                        f"{source}: unknown key {key}.{k}.{did_you_mean(k, valid)} "
                        f"Valid keys under {key!r}: {', '.join(sorted(valid))}."
                    )
                flat[k] = v
        else:
            flat[key] = value
    return flat


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML settings file into flat settings (not yet validated)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Settings file {str(p)!r} does not exist. Pass an existing YAML file.")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e}).") from None
    if isinstance(doc, Mapping) and "hparams" in doc and isinstance(doc["hparams"], Mapping):
        doc = doc["hparams"]  # best_hparams.yaml from `kclassify tune` keeps them under a key
    return flatten_yaml(doc, str(p))


def build_config(*layers: Mapping[str, Any]) -> Config:
    """Merge flat setting layers (later wins) over the defaults, validating each."""
    values: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            values[name] = coerce(name, value)
    cfg = Config()
    table = fields_by_name()
    for name, value in values.items():
        setattr(getattr(cfg, table[name][0]), name, value)
    _check_consistency(cfg)
    return cfg


def layered(config_file: str | Path | None = None, hparams_file: str | Path | None = None,
            settings: Mapping[str, Any] | None = None, *, recommended=None) -> Config:
    """Settings as every entry point layers them: defaults < the data's recommendations <
    ``config_file`` < ``hparams_file`` (e.g. best_hparams.yaml) < ``settings`` (flags, keywords).

    Args:
        recommended: data spec -> recommended settings (``kclassify.data.recommended_settings``);
            the data spec is the one the highest layer names.
    """
    layers = [load_yaml(p) for p in (config_file, hparams_file) if p]
    settings = dict(settings or {})
    spec = next((layer["data"] for layer in reversed([*layers, settings]) if "data" in layer), Config().data.data)
    return build_config(recommended(spec) if recommended else {}, *layers, settings)


def _check_consistency(cfg: Config) -> None:
    d = cfg.data
    if d.val_fraction + d.test_fraction >= 1.0:
        raise ConfigError(
            "val_fraction + test_fraction must leave images for training; received "
            f"{d.val_fraction} + {d.test_fraction}. Lower one of them."
        )
    monitor = cfg.train.monitor
    bare = monitor[4:] if monitor.startswith("val_") else monitor
    if bare not in ("loss", "accuracy", "auc", "f1"):  # the metrics every model reports (training.recipe.metrics)
        raise ConfigError(
            f"Unknown monitor {monitor!r}. Valid values: val_loss, val_accuracy, val_auc, val_f1 and the same "
            "without val_ (training metrics)."
        )


def to_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def from_yaml_file(path: str | Path) -> Config:
    """Load a resolved ``config.yaml`` (e.g. from a run folder)."""
    return build_config(load_yaml(path))
