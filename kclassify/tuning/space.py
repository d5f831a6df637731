"""Search spaces as readable YAML files, validated against ``fit``'s settings.

Each top-level key names a setting of ``kclassify fit`` (see ``kclassify fit --help``)
and gives a KerasTuner type and its range::

    optimizer:  {type: choice, values: [sgd, momentum, adam]}
    lr:         {type: float, min: 1.0e-4, max: 1.0e-1, sampling: log}
    batch_size: {type: choice, values: [16, 32, 64]}
    dropout:    {type: float, min: 0.0, max: 0.5, step: 0.1}
    momentum:   {type: float, min: 0.8, max: 0.99, when: {optimizer: [momentum, nesterov]}}
    mixed_precision: {type: boolean}

``when`` makes an entry conditional on another entry's values (KerasTuner's
conditional scopes). Loading checks every name, type, bound and value, and says
which entry is wrong and why. This module does not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import coerce, fields_by_name
from ..errors import ConfigError, did_you_mean

TYPES = ("choice", "int", "float", "boolean")
KEYS = {
    "choice": {"type", "values", "default", "when"},
    "int": {"type", "min", "max", "step", "sampling", "default", "when"},
    "float": {"type", "min", "max", "step", "sampling", "default", "when"},
    "boolean": {"type", "default", "when"},
}
SAMPLINGS = ("linear", "log", "reverse_log")
_PACKAGE = Path(__file__).resolve().parent.parent
# An installed wheel carries the repository's search_spaces/ as kclassify/search_spaces/
# (see pyproject.toml); a source checkout or editable install reads the repository's folder.
SHIPPED = next((p for p in (_PACKAGE / "search_spaces", _PACKAGE.parent / "search_spaces") if p.is_dir()),
               _PACKAGE / "search_spaces")


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    values: tuple = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = "linear"
    default: Any = None
    when: dict[str, tuple] = field(default_factory=dict)

    def admits(self, value: Any) -> bool:
        """Whether a trial of this entry can take ``value`` (in the choices, or in range and on the step grid)."""
        if self.type == "choice":
            return value in self.values
        if self.type == "boolean":
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.min <= value <= self.max:
            return False
        if self.step:
            steps = (value - self.min) / self.step
            return abs(steps - round(steps)) < 1e-6
        return self.type == "float" or float(value).is_integer()


@dataclass(frozen=True)
class SearchSpace:
    source: str
    entries: tuple[Entry, ...]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]


def _fail(source: str, name: str, why: str) -> ConfigError:
    return ConfigError(f"{source}: entry {name!r}: {why}")


def _entry(source: str, name: str, spec: Any, seen: dict[str, Entry]) -> Entry:
    settings = fields_by_name()
    if name not in settings:
        raise _fail(source, name, f"not a setting of kclassify fit.{did_you_mean(name, settings)} "
                                  f"Valid settings: {', '.join(sorted(settings))}.")
    if not isinstance(spec, dict) or "type" not in spec:
        raise _fail(source, name, "expected a mapping with a 'type' "
                                  f"({', '.join(TYPES)}); received {spec!r}.")
    kind = str(spec["type"]).lower()
    if kind not in TYPES:
        raise _fail(source, name, f"unknown type {spec['type']!r}.{did_you_mean(kind, TYPES)} "
                                  f"Valid types: {', '.join(TYPES)}.")
    extra = set(spec) - KEYS[kind]
    if extra:
        raise _fail(source, name, f"unknown key(s) {sorted(extra)} for type {kind}; valid: "
                                  f"{', '.join(sorted(KEYS[kind]))}.")
    when = _conditions(source, name, spec.get("when") or {}, seen)
    if kind == "boolean":
        _check_value(source, name, True)
        return Entry(name, kind, default=spec.get("default"), when=when)
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise _fail(source, name, f"a choice needs a non-empty list 'values'; received {values!r}.")
        values = tuple(_check_value(source, name, v) for v in values)
        if len(set(values)) != len(values):
            raise _fail(source, name, f"values repeat: {list(values)}.")
        return Entry(name, kind, values=values, default=spec.get("default"), when=when)
    return _range_entry(source, name, kind, spec, when)


def _range_entry(source, name, kind, spec, when) -> Entry:
    if "min" not in spec or "max" not in spec:
        raise _fail(source, name, f"a {kind} range needs 'min' and 'max'.")
    cast = int if kind == "int" else float
    try:
        low, high = cast(spec["min"]), cast(spec["max"])
        step = cast(spec["step"]) if spec.get("step") is not None else None
    except (TypeError, ValueError):
        raise _fail(source, name, f"min/max/step must be {cast.__name__}s; received "
                                  f"{spec.get('min')!r}, {spec.get('max')!r}, {spec.get('step')!r}.") from None
    if low >= high:
        raise _fail(source, name, f"min must be below max; received min={low}, max={high}.")
    sampling = str(spec.get("sampling", "linear")).lower()
    if sampling not in SAMPLINGS:
        raise _fail(source, name, f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}.")
    if sampling != "linear" and low <= 0:
        raise _fail(source, name, f"log sampling needs min > 0; received min={low}.")
    if step is not None and step <= 0:
        raise _fail(source, name, f"step must be positive; received {step}.")
    for bound in (low, high):
        _check_value(source, name, bound)
    return Entry(name, kind, min=low, max=high, step=step, sampling=sampling,
                 default=spec.get("default"), when=when)


def _check_value(source: str, name: str, value: Any) -> Any:
    """The value as ``fit`` would take it; a ConfigError naming the entry if it would refuse it."""
    try:
        return coerce(name, value)
    except ConfigError as e:
        raise _fail(source, name, f"value {value!r} is not valid for fit: {e}") from None


def _conditions(source: str, name: str, when: Any, seen: dict[str, Entry]) -> dict[str, tuple]:
    if not isinstance(when, dict):
        raise _fail(source, name, f"'when' expects a mapping {{entry: [values]}}; received {when!r}.")
    out = {}
    for parent, values in when.items():
        if parent not in seen or seen[parent].type != "choice":
            raise _fail(source, name, f"'when' refers to {parent!r}, which must be a choice entry "
                                      "listed above this one.")
        values = tuple(values) if isinstance(values, list) else (values,)
        bad = [v for v in values if v not in seen[parent].values]
        if bad:
            raise _fail(source, name, f"'when' values {bad} are not among {parent}'s values "
                                      f"{list(seen[parent].values)}.")
        out[parent] = values
    return out


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file (a name of a shipped one also works).

    Example:
        >>> space = load_space("default")
        >>> "lr" in space.names
        True
    """
    import yaml

    p = Path(path)
    if not p.is_file() and (SHIPPED / f"{path}.yaml").is_file():
        p = SHIPPED / f"{path}.yaml"
    if not p.is_file():
        shipped = sorted(f.stem for f in SHIPPED.glob("*.yaml"))
        raise ConfigError(f"Search space {str(path)!r} does not exist. Pass a YAML file or one of: "
                          f"{', '.join(shipped)}.")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e}).") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{p}: expected a mapping of settings to ranges; received {type(doc).__name__}.")
    seen: dict[str, Entry] = {}
    for name, spec in doc.items():
        seen[name] = _entry(str(p), str(name), spec, seen)
    return SearchSpace(str(p), tuple(seen.values()))


def to_hyperparameters(space: SearchSpace, hp=None, defaults: dict[str, Any] | None = None):
    """Declare the space on a ``keras_tuner.HyperParameters`` (conditions become scopes).

    Args:
        defaults: setting -> value to declare as each entry's default (the first trial of a
            search takes the defaults), where the entry admits it; otherwise the entry's own
            ``default``.
    """
    import dataclasses

    import keras_tuner

    hp = hp or keras_tuner.HyperParameters()
    for e in space.entries:
        if defaults and e.name in defaults and e.admits(defaults[e.name]):
            e = dataclasses.replace(e, default=defaults[e.name])
        if e.when:
            (parent, values), = list(e.when.items())[:1]
            with hp.conditional_scope(parent, list(values)):
                _declare(hp, e)
        else:
            _declare(hp, e)
    return hp


def _declare(hp, e: Entry):
    if e.type == "choice":
        return hp.Choice(e.name, list(e.values), default=e.default)
    if e.type == "boolean":
        return hp.Boolean(e.name, default=bool(e.default) if e.default is not None else False)
    if e.type == "int":
        return hp.Int(e.name, int(e.min), int(e.max), step=int(e.step) if e.step else None,
                      sampling=e.sampling, default=e.default)
    return hp.Float(e.name, e.min, e.max, step=e.step, sampling=e.sampling, default=e.default)
