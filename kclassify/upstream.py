"""Every private API of Keras, KerasTuner, TensorFlow and LiteRT kclassify touches, in one place.

Each function below names the private attribute it reaches for and why no public API does the
job. They were checked against the versions in :data:`CHECKED`; :func:`problems` says, for the
versions installed, which of them no longer look as expected (``tests/test_upstream.py`` fails
with its message after an upgrade that changes one). Nothing else in kclassify reaches into a
leading-underscore name of another library.
"""

from __future__ import annotations

import warnings

CHECKED = {"keras": "3.15.1", "keras_tuner": "1.4.8", "tensorflow": "2.21.0", "ai_edge_litert": "2.3.0"}


def reset_initial_epoch(model) -> None:
    """Forget the epoch ``keras.callbacks.BackupAndRestore`` restored (``model._initial_epoch``).

    BackupAndRestore sets it when it restores, and Keras' ``fit`` prefers it to ``initial_epoch``
    ever after: a run resumed inside the head phase started fine-tuning at the head's resumed epoch
    (trained twice). Each phase's fit starts clean; its backup sets it anew.
    """
    model._initial_epoch = None


def plan_hyperband(oracle, min_epochs: int, max_epochs: int) -> None:
    """Make a new Hyperband search's brackets start at ``min_epochs`` instead of KerasTuner's 1.

    KerasTuner's ``HyperbandOracle`` plans its brackets in ``__init__`` from ``min_epochs`` fixed
    at 1 (no argument), so the plan is redone here: ``_current_bracket``, ``_get_num_brackets``,
    ``_brackets`` and ``_start_new_bracket``.
    """
    oracle.min_epochs = max(1, min(int(min_epochs), int(max_epochs)))
    oracle._current_bracket = oracle._get_num_brackets() - 1
    oracle._brackets = []
    oracle._start_new_bracket()


def has_value_source(oracle) -> bool:
    """Whether ``oracle`` draws new values through ``_random_values`` (a distributed worker's client does not)."""
    return getattr(oracle, "_random_values", None) is not None


def replace_value_source(oracle, draw) -> None:
    """Make every new trial's values come from ``draw()`` (``oracle._random_values``).

    Random search, Hyperband's new brackets and Bayesian optimization's initial points all draw
    through this one method; KerasTuner has no public hook for the first trial's values.
    """
    oracle._random_values = draw


def is_duplicate(oracle, values: dict) -> bool:
    """Whether ``values`` were tried before (``oracle._duplicate``)."""
    return oracle._duplicate(values)


def max_collisions(oracle) -> int:
    """How many duplicate draws an oracle accepts before giving up (``oracle._max_collisions``)."""
    return oracle._max_collisions


def ema_variables(optimizer) -> list:
    """An optimizer's moving averages of the weights (``use_ema=True``), one per trainable variable.

    Keras keeps them in ``_model_variables_moving_average`` and reads them only through
    ``finalize_variable_values``; kclassify starts a fresh average at the model's weights when the step
    counter was set ahead (:func:`kclassify.training.averaging.start_average`).
    """
    return optimizer._model_variables_moving_average


class QuietContinuation:
    """Mixed into a KerasTuner tuner: a Hyperband continuation loads its rung's weights without a warning.

    ``Tuner._build_hypermodel`` loads the earlier rung's checkpoint, with the optimizer's variables,
    into a model whose optimizer is not built yet, and Keras says it skips them. The trial then goes
    on along its learning-rate schedule (kclassify sets the step counter); Adam's moments restart,
    as they do in KerasTuner itself.
    """

    def _build_hypermodel(self, hp):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return super()._build_hypermodel(hp)


def gradient_registry() -> dict | None:
    """TensorFlow's process-wide gradient registry (``ops._gradient_registry._registry``), or None.

    Each ``tf.custom_gradient`` traced in graph mode registers ``CustomGradient-N`` there and is
    never removed (tensorflow#61791); :func:`kclassify.tuning.tf_workarounds.released_custom_gradients`
    removes a trial's.
    """
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry
    except (ImportError, AttributeError):  # TensorFlow changed its internals: nothing to release
        return None


def tuner_json_module():
    """The module whose ``save_json`` writes every KerasTuner state file (``keras_tuner.src.utils``), or None."""
    try:
        from keras_tuner.src import utils
    except ImportError:
        return None
    return utils


def interpreter_nodes(interpreter):
    """LiteRT's wrapped C++ interpreter (``Interpreter._interpreter``): its nodes, for the delegate check.

    The Python API exposes tensors, not nodes; ``NumNodes``, ``NodeName``, ``NodeInputs``,
    ``NodeOutputs`` and ``OutputIndices`` of the wrapper say which ops the XNNPACK delegate took.
    """
    return interpreter._interpreter


def problems(tflite_file: str | None = None) -> list[str]:
    """What no longer looks as this module expects, for the versions installed (empty: all as checked).

    ``tflite_file``: any ``.tflite`` model, to check LiteRT's interpreter too.
    """
    import importlib.metadata as md

    found = []

    def check(ok: bool, what: str, package: str) -> None:
        if not ok:
            try:
                version = md.version(package.replace("_", "-"))
            except md.PackageNotFoundError:
                version = "not installed"
            found.append(f"{what}: not as in {package} {CHECKED[package]} (installed: {version}); "
                         f"see kclassify/upstream.py")

    import keras
    import keras_tuner

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    check(hasattr(model, "_initial_epoch"), "keras.Model._initial_epoch", "keras")
    averaging = keras.optimizers.SGD(use_ema=True)
    averaging.build(model.trainable_variables)
    check(len(getattr(averaging, "_model_variables_moving_average", [])) == len(model.trainable_variables),
          "keras optimizer._model_variables_moving_average", "keras")
    oracle = keras_tuner.oracles.HyperbandOracle(objective="loss", max_epochs=9)
    for name in ("_current_bracket", "_get_num_brackets", "_brackets", "_start_new_bracket", "_random_values",
                 "_duplicate", "_max_collisions"):
        check(hasattr(oracle, name), f"keras_tuner HyperbandOracle.{name}", "keras_tuner")
    check(hasattr(keras_tuner.Tuner, "_build_hypermodel"), "keras_tuner Tuner._build_hypermodel", "keras_tuner")
    utils = tuner_json_module()
    check(utils is not None and callable(getattr(utils, "save_json", None)), "keras_tuner.src.utils.save_json",
          "keras_tuner")
    check(isinstance(gradient_registry(), dict), "tensorflow ops._gradient_registry._registry", "tensorflow")
    if tflite_file:
        from ai_edge_litert.interpreter import Interpreter

        wrapped = getattr(Interpreter(model_path=str(tflite_file)), "_interpreter", None)
        check(all(hasattr(wrapped, name) for name in ("NumNodes", "NodeName", "NodeInputs", "NodeOutputs",
                                                       "OutputIndices")),
              "ai_edge_litert Interpreter._interpreter's nodes", "ai_edge_litert")
    return found
