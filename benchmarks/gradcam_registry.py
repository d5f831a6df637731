"""Grad-CAM over every backbone in the registry: each builds, and its heat map has the last feature map's cells.

    python benchmarks/gradcam_registry.py [--names small_cnn resnet50 ...] [--size 96]

Issue 30 asks for Grad-CAM on every registry backbone. The suite builds one backbone per source
(small_cnn, a ``keras.applications`` model, kimm's EfficientNet-Lite, our MobileNetV4); this builds each
of the registry's backbones untrained (``weights="none"``) at ``--size`` (or its minimum, when larger), takes
Grad-CAM (:func:`kclassify.inference.explain.gradcam`) of two generated images for their predicted class, and
prints the map's cells and the seconds each took. A backbone whose Grad-CAM raises or gives a map that is
not finite is listed at the end and the script exits 1; an untrained model's map may be all zero (every
cell below the ReLU), which is printed as "flat", not counted as a failure.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", nargs="+", help="registry names (default: every one)")
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()

    import keras
    import numpy as np

    from kclassify.inference.explain import gradcam
    from kclassify.models import registry
    from kclassify.models.build import build_classifier

    failed, names = [], args.names or registry.names()
    for name in names:
        size = max(args.size, registry.get(name).min_size)
        start = time.perf_counter()
        try:
            keras.utils.set_random_seed(0)
            model = build_classifier(name, 3, size)
            images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.uint8)
            heats, _ = gradcam(model, images)
            state = "ok" if heats.max() == 1.0 else "flat" if np.isfinite(heats).all() else "FAILED"
            cells = "x".join(map(str, heats.shape[1:]))
        except Exception as error:  # noqa: BLE001 - every backbone is tried; the failures are listed at the end
            state, cells = "FAILED", f"{type(error).__name__}: {error}"[:100]
        if state == "FAILED":
            failed.append(name)
        seconds = time.perf_counter() - start
        print(f"{name:26} {size:4d} px  map {cells:12}  {state:6}  {seconds:6.1f} s", flush=True)
        keras.backend.clear_session()
    print(f"\n{len(failed)} of {len(names)} failed" + (f": {', '.join(failed)}" if failed else ""))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
