"""Our MobileNetV4 Conv against timm's, number for number (issue 27): the port of timm's weights is exact.

    python benchmarks/mnv4_vs_timm.py --torch-python /path/to/venv-with-torch-and-timm/bin/python

timm (in a Python with torch, torchvision and timm; not a kclassify dependency) builds
``mobilenetv4_conv_small`` and ``_medium`` with random weights and random BatchNorm statistics, saves
their ``state_dict`` as ``.safetensors`` and scores random images; kclassify's ``MobileNetV4`` loads
the same file (``kclassify.models.mobilenet_v4.load_timm``) and scores the same images. Prints the
largest differences of the 960-channel features and of the 1000-class probabilities.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

TORCH_SIDE = """
import sys, numpy as np, torch, timm
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
for variant in ("small", "medium"):
    m = timm.create_model(f"mobilenetv4_conv_{variant}", pretrained=False).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5); mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.2, 0.2)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, f"{out}/{variant}.safetensors")
        x = np.random.default_rng(1).normal(size=(2, 3, 96, 96)).astype("float32")
        np.save(f"{out}/{variant}_x.npy", x)
        np.save(f"{out}/{variant}_probs.npy", torch.softmax(m(torch.from_numpy(x)), -1).numpy())
        np.save(f"{out}/{variant}_features.npy", m.forward_features(torch.from_numpy(x)).numpy())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", required=True, help="a Python with torch, torchvision, timm, safetensors")
    args = parser.parse_args()
    from kclassify.models.mobilenet_v4 import MobileNetV4

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([args.torch_python, "-c", TORCH_SIDE, tmp], check=True)
        for variant in ("small", "medium"):
            file = Path(tmp) / f"{variant}.safetensors"
            x = np.load(Path(tmp) / f"{variant}_x.npy").transpose(0, 2, 3, 1)  # NCHW -> NHWC
            probs = MobileNetV4(variant, (96, 96, 3), include_top=True, weights=str(file)).predict(x, verbose=0)
            features = MobileNetV4(variant, (96, 96, 3), weights=str(file)).predict(x, verbose=0).transpose(0, 3, 1, 2)
            ref_p, ref_f = (np.load(Path(tmp) / f"{variant}_{k}.npy") for k in ("probs", "features"))
            print(f"mobilenetv4_conv_{variant}: features max |diff| {np.abs(features - ref_f).max():.3g} "
                  f"(largest value {np.abs(ref_f).max():.3g}), probabilities max |diff| {np.abs(probs - ref_p).max():.3g}, "
                  f"same top-1: {bool((probs.argmax(1) == ref_p.argmax(1)).all())}")


if __name__ == "__main__":
    main()
