"""Distribution: MirroredStrategy over 2 logical CPU devices; mixed precision."""

import json
import subprocess
import sys

import numpy as np

from conftest import write_class_folder

MIRRORED = """
import json, sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kclassify import fit
r = fit(data=sys.argv[1], output=sys.argv[2], strategy="mirrored", epochs=1, image_size=16, batch_size=8,
        verbose=0)
from kclassify.training.strategy import select_strategy
print(json.dumps({"replicas": select_strategy("mirrored").num_replicas_in_sync, "metrics": r.metrics}))
"""


def test_mirrored_on_two_logical_cpus(tmp_path):
    data = write_class_folder(tmp_path / "data", per_class=8)
    out = subprocess.run([sys.executable, "-c", MIRRORED, str(data), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["metrics"]["test"]["accuracy"] >= 0
    assert (tmp_path / "run" / "model.keras").is_file()


def test_mixed_precision_keeps_a_float32_output(image_folder, tmp_path):
    import keras

    from kclassify import fit

    result = fit(data=str(image_folder), output=tmp_path / "run", mixed_precision=True, epochs=1,
                 image_size=16, batch_size=8, verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the fit
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    assert model.get_layer("small_cnn").get_layer("stem_conv").dtype_policy.compute_dtype == "bfloat16"
    probs = model.predict(np.zeros((1, 16, 16, 3), "float32"), verbose=0)
    assert probs.dtype == np.float32 and np.isfinite(result.metrics["test"]["loss"])
