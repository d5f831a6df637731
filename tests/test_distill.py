"""Distillation (fit --teacher): the loss by hand, metrics on the labels, ensembles, and a teacher that knows better."""

import json

import numpy as np
import pytest

from conftest import TINY, make_image


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_distillation_loss_equals_the_hand_computed_value():
    import keras

    from kclassify.training.distill import DistillationLoss

    labels = np.array([[1, 0, 0], [0, 0, 1]], np.float32)
    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    student = np.array([[0.5, 0.4, 0.1], [0.2, 0.2, 0.6]], np.float32)
    alpha, t = 0.3, 2.0
    ce = -np.log(student[labels == 1])  # per image
    soft_t, soft_s = _softmax(np.log(teacher) / t), _softmax(np.log(student) / t)
    kl = (soft_t * np.log(soft_t / soft_s)).sum(axis=1)
    expected = np.mean((1 - alpha) * ce + alpha * t * t * kl)
    loss = DistillationLoss(keras.losses.CategoricalCrossentropy(), 3, alpha, t)
    assert float(loss(np.concatenate([labels, teacher], 1), student)) == pytest.approx(expected, rel=1e-5)
    # labels alone (validation batches): the plain loss
    assert float(loss(labels, student)) == pytest.approx(ce.mean(), rel=1e-5)
    # a student that matches its teacher adds no KL: alpha = 1 then gives 0
    same = DistillationLoss(keras.losses.CategoricalCrossentropy(), 3, 1.0, t)
    assert float(same(np.concatenate([labels, teacher], 1), teacher)) == pytest.approx(0.0, abs=1e-6)
    restored = DistillationLoss.from_config(loss.get_config())  # checkpoints save the compiled loss
    assert float(restored(np.concatenate([labels, teacher], 1), student)) == pytest.approx(expected, rel=1e-5)


def test_metrics_read_the_labels_half():
    import keras

    from kclassify.training.distill import OnLabels

    labels = np.array([[1, 0], [0, 1], [0, 1]], np.float32)
    teacher = np.array([[0, 1], [1, 0], [1, 0]], np.float32)  # the teacher's opinion must not count
    pred = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], np.float32)
    metric = OnLabels(keras.metrics.CategoricalAccuracy(name="accuracy"), 2)
    metric.update_state(np.concatenate([labels, teacher], 1), pred)
    assert metric.name == "accuracy" and float(metric.result()) == pytest.approx(2 / 3)


def _teacher_model(path, probabilities, size=16):
    """A .keras 'teacher' that answers ``probabilities`` whatever the image, with labels.txt beside it."""
    import keras

    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(len(probabilities), kernel_initializer="zeros",  # the image cannot move it
                                bias_initializer=keras.initializers.Constant(np.log(probabilities)))(pooled)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / "model.keras")
    return path / "model.keras"


def test_teachers_are_averaged_reordered_resized_and_wrong_classes_refused(tmp_path):
    import tensorflow as tf

    from kclassify.errors import ConfigError
    from kclassify.training.distill import load_teachers, with_teacher_targets

    one = _teacher_model(tmp_path / "one", [0.6, 0.3, 0.1])
    (tmp_path / "one" / "labels.txt").write_text("cat\ndog\nfox\n")
    two = _teacher_model(tmp_path / "two", [0.2, 0.2, 0.6], size=24)  # another input size: resized inside
    (tmp_path / "two" / "labels.txt").write_text("fox\ndog\ncat\n")  # another order: mapped to the student's
    teachers = load_teachers(f"{one},{two}", ["cat", "dog", "fox"])
    assert [t.image_size for t in teachers] == [16, 24] and len({t.fingerprint for t in teachers}) == 2
    images = tf.zeros((2, 16, 16, 3))
    labels = tf.one_hot([0, 2], 3)
    targets = with_teacher_targets(teachers)(images, labels).numpy()
    # cat: (0.6 + 0.6) / 2, dog: (0.3 + 0.2) / 2, fox: (0.1 + 0.2) / 2 -- two's fox/dog/cat reordered
    np.testing.assert_allclose(targets[:, 3:], [[0.6, 0.25, 0.15]] * 2, atol=1e-5)
    np.testing.assert_allclose(targets[:, :3], labels.numpy())
    (tmp_path / "one" / "labels.txt").write_text("cat\ndog\nowl\n")
    with pytest.raises(ConfigError, match="same classes"):
        load_teachers(str(one), ["cat", "dog", "fox"])


def test_a_keras_teacher_computes_as_its_student_does(tmp_path):
    """Under the student's mixed policy a Keras teacher computes in bfloat16 (its output in float32), and
    its probabilities stay those of the saved float32 model within bfloat16's rounding."""
    import keras
    import tensorflow as tf

    from kclassify.models.build import all_layers
    from kclassify.training.distill import load_teachers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))
    (tmp_path / "t").mkdir()
    model.save(tmp_path / "t" / "model.keras")
    (tmp_path / "t" / "labels.txt").write_text("a\nb\nc\n")
    images = tf.random.stateless_uniform((8, 16, 16, 3), (1, 2), 0, 255)

    plain = load_teachers(str(tmp_path / "t"), ["a", "b", "c"])[0].probabilities(images)
    np.testing.assert_allclose(plain.numpy(), model(images).numpy(), atol=1e-6)  # float32: the saved arithmetic

    mixed = load_teachers(str(tmp_path / "t"), ["a", "b", "c"], policy="mixed_bfloat16")[0].probabilities(images)
    assert mixed.dtype == tf.float32
    np.testing.assert_allclose(mixed.numpy(), plain.numpy(), atol=0.02)
    assert np.abs(mixed.numpy() - plain.numpy()).max() > 0  # bfloat16 arithmetic, not the float32 model

    from kclassify.models.build import with_policy

    copy = with_policy(model, "mixed_bfloat16")
    assert {layer.name: layer.dtype_policy.compute_dtype for layer in all_layers(copy) if layer.weights} == {
        "conv": "bfloat16", "norm": "bfloat16", "predictions": "float32"}
    assert with_policy(copy, "mixed_bfloat16") is copy and with_policy(model, "float32") is model
    # a Sequential model's output is its last layer; a functional model's outputs may be a dict
    stack = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="hidden"),
                              keras.layers.Dense(2, activation="softmax", name="out")])
    assert [layer.dtype_policy.compute_dtype for layer in with_policy(stack, "mixed_bfloat16").layers] == [
        "bfloat16", "float32"]
    x = keras.Input((4,))
    named = keras.Model(x, {"p": keras.layers.Dense(2, name="p")(keras.layers.Dense(5, name="h")(x))})
    assert {layer.name: layer.dtype_policy.compute_dtype
            for layer in with_policy(named, "mixed_bfloat16").layers if layer.weights} == {"h": "bfloat16",
                                                                                          "p": "float32"}


def test_teachers_compute_in_bfloat16_only_on_a_cpu_with_amx(monkeypatch):
    """Teachers run in the tf.data pipeline, on the CPU: bfloat16 only where AMX computes it, never float16."""
    from kclassify.training import recipe

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)  # "0" would keep even auto in float32
    # the machine is stated, not read: a CPU without AMX, then with it, no GPU, then a GPU
    monkeypatch.setattr(recipe.tf.config, "list_logical_devices", lambda kind=None: [])
    monkeypatch.setattr(recipe, "cpu_has_amx", lambda: False)
    assert recipe.teacher_policy(True) == "float32"  # bfloat16 forced without AMX: emulated
    monkeypatch.setattr(recipe, "cpu_has_amx", lambda: True)
    assert recipe.teacher_policy(None) == recipe.teacher_policy(True) == "mixed_bfloat16"
    assert recipe.teacher_policy(False) == "float32"
    monkeypatch.setattr(recipe.tf.config, "list_logical_devices", lambda kind=None: ["a GPU"] if kind == "GPU" else [])
    assert recipe.policy_for(True) == "mixed_float16" and recipe.teacher_policy(True) == "float32"


def _manifest(root, noisy: bool) -> str:
    """A CSV of 3 colour classes, split 12/4/4 per class; ``noisy``: 9 of 12 training cats labelled dog."""
    from PIL import Image

    rows = ["path,label,split"]
    for k, name in enumerate(("cat", "dog", "fox")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(20):
            file = root / name / f"{i:02d}.png"
            if not file.exists():
                Image.fromarray(make_image(k, 16, seed=100 * k + i)).save(file)
            split = "train" if i < 12 else "val" if i < 16 else "test"
            label = "dog" if noisy and name == "cat" and i < 9 else name
            rows.append(f"{name}/{i:02d}.png,{label},{split}")
    csv = root / ("noisy.csv" if noisy else "clean.csv")
    csv.write_text("\n".join(rows) + "\n")
    return str(csv)


@pytest.mark.slow
def test_a_student_learns_from_a_teacher_what_the_labels_hide(tmp_path, tiny_run):
    from kclassify import fit

    settings = {**TINY, "epochs": 8, "input_scale": 1, "phone_resize": 0.0}
    teacher = tiny_run  # trained on clean images of the same colour classes (other files): test accuracy 1.0
    noisy = _manifest(tmp_path / "data", noisy=True)
    alone = fit(data=noisy, output=tmp_path / "alone", verbose=0, **settings)
    taught = fit(data=noisy, output=tmp_path / "taught", verbose=0, teacher=str(teacher), distill_alpha=0.9,
                 **settings)
    # alone, the student believes the labels: most cats are dogs (measured: test accuracy 0.667 alone, 1.0 taught)
    assert alone.metrics["test"]["accuracy"] < 0.8
    assert taught.metrics["test"]["accuracy"] >= alone.metrics["test"]["accuracy"] + 0.2
    info = json.loads((taught.run_dir / "run.json").read_text())
    assert info["teachers"][0]["path"] == str(teacher) and len(info["teachers"][0]["fingerprint"]) == 64
    history = (taught.run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"accuracy", "val_accuracy", "val_loss", "f1"} <= set(history)


@pytest.mark.slow
def test_a_resumed_run_refuses_a_teacher_whose_file_changed(tmp_path):
    import keras

    from kclassify import fit
    from kclassify.errors import ConfigError

    class Stop(keras.callbacks.Callback):  # a run cut off after its first epoch, as a kill would leave it
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    data = _manifest(tmp_path / "data", noisy=False)
    teacher = fit(data=data, output=tmp_path / "teacher", verbose=0, **TINY)
    settings = {**TINY, "epochs": 3, "teacher": str(teacher.run_dir)}
    with pytest.raises(KeyboardInterrupt):
        fit(data=data, output=tmp_path / "student", verbose=0, callbacks=[Stop()], **settings)
    recorded = json.loads((tmp_path / "student" / "run.json").read_text())["teachers"]
    assert recorded[0]["fingerprint"] != "" and (tmp_path / "student" / "config.yaml").is_file()
    model = keras.models.load_model(teacher.run_dir / "model.keras")
    model.get_layer("predictions").set_weights([w * 0 for w in model.get_layer("predictions").get_weights()])
    model.save(teacher.run_dir / "model.keras")  # the teacher's file is not the one the run started with
    with pytest.raises(ConfigError, match="teachers whose files have changed"):
        fit(data=data, output=tmp_path / "student", verbose=0, **settings)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["savedmodel/1", "model_int8.tflite"])
def test_a_savedmodel_or_tflite_teacher_answers_in_the_pipeline(tiny_export, name):
    import tensorflow as tf

    from kclassify.training.distill import load_teachers, with_teacher_targets

    [teacher] = load_teachers(str(tiny_export.folder / name), ["fox", "dog", "cat"])  # the student's order
    images = tf.constant(np.stack([make_image(k, 16, seed=40 + k) for k in range(3)]).astype("float32"))
    targets = tf.function(with_teacher_targets([teacher]))(images, tf.one_hot([2, 1, 0], 3)).numpy()
    assert targets[:, 3:].argmax(axis=1).tolist() == [2, 1, 0]  # colour k is the student's class 2 - k
    np.testing.assert_allclose(targets[:, 3:].sum(axis=1), 1.0, atol=0.02)
