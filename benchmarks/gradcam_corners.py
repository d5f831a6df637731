"""Does Grad-CAM find the corner that decides the class, for each backbone family? (issue 30)

    python benchmarks/gradcam_corners.py --out bench/corners [--size 128] [--per-class 60] [--epochs 30]
        [--backbones small_cnn mobilenet_v3_small efficientnet_lite0 mobilenet_v4_conv_small resnet50]
        [--images docs/images/gradcam_corners.png]

A generated set whose class is a bright patch in the top-left or the bottom-right corner of grey noise
(the suite's Grad-CAM test, tests/test_explain.py, at a size where the mobile backbones' last feature
map has more than 2x2 cells: at 64 px their receptive fields cover the whole image and a 2x2 map
cannot point at a quarter). Each backbone is trained from scratch (``weights="none"``: no ImageNet
weights here) by ``kclassify.fit``, then Grad-CAM (:func:`kclassify.inference.explain.gradcam`) of the
predicted class is taken on 20 new images per class. Printed per backbone: the run's test accuracy, its
accuracy on the new images, the last feature map's cells, and the share of the new images whose mean
heat is higher in the deciding quarter than in the opposite one (a model that looks anywhere: about
half; ties count as wrong). ``--images`` writes one overlay per backbone and class (rows in the order of
``--backbones``, top-left class first).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKBONES = ["small_cnn", "mobilenet_v3_small", "efficientnet_lite0", "mobilenet_v4_conv_small", "resnet50"]
CORNERS = ("top_left", "bottom_right")


def corner_image(corner: str, seed: int, size: int):
    """Grey noise with a bright patch on a third of the side in one corner (the suite's image, scaled)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(40, 120, (size, size, 3)).astype(np.uint8)
    patch = size * 10 // 32
    span = slice(0, patch) if corner == "top_left" else slice(size - patch, size)
    image[span, span] = (250, 230, 40)
    return image


def write_set(root: Path, size: int, per_class: int) -> Path:
    from PIL import Image

    for corner in CORNERS:
        (root / corner).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(corner_image(corner, 1000 * (corner == "top_left") + i, size)).save(root / corner / f"{i}.png")
    return root


def quarters(heat) -> tuple[float, float]:
    """Mean heat in the top-left and the bottom-right quarter (an odd side's middle row and column in neither)."""
    h, w = heat.shape
    return float(heat[: h // 2, : w // 2].mean()), float(heat[(h + 1) // 2:, (w + 1) // 2:].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/corners"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--bn-momentum", type=float, default=0.8,
                        help="from scratch on a few images the mobile nets' own 0.999 leaves them at chance")
    parser.add_argument("--backbones", nargs="+", default=BACKBONES)
    parser.add_argument("--images", type=Path, help="a PNG of one overlay per backbone and class")
    args = parser.parse_args()

    import numpy as np

    from kclassify import fit
    from kclassify.inference import load_predictor
    from kclassify.inference.explain import gradcam, keras_model, overlay

    out = args.out / f"{args.size}px-{args.per_class}-{args.epochs}ep-bn{args.bn_momentum:g}"  # reused runs match
    data = out / "data" if (out / "data").is_dir() else write_set(out / "data", args.size, args.per_class)
    rows, tiles = [], []
    for backbone in args.backbones:
        run = out / backbone
        if not (run / "model.keras").is_file():
            fit(data=str(data), output=run, backbone=backbone, weights="none", image_size=args.size, input_scale=1,
                epochs=args.epochs, batch_size=16, lr=1e-3, augment=0.0, phone_resize=0.0, seed=1,
                bn_momentum=args.bn_momentum, verbose=0)
        predictor = load_predictor(run)
        model = keras_model(predictor)
        test = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]  # fit's own, on its test split
        right, total, correct, cells, row = 0, 0, 0, None, []
        for corner in CORNERS:
            images = np.stack([corner_image(corner, 5000 + i, args.size) for i in range(20)])
            heats, picked = gradcam(model, images)
            cells = heats.shape[1:]
            if min(cells) < 2:
                raise SystemExit(f"{backbone}'s last feature map is {cells[0]}x{cells[1]} at {args.size} px: "
                                 "no quarter to point at; give a larger --size")
            correct += sum(predictor.labels[c] == corner for c in picked)
            for heat in heats:
                top_left, bottom_right = quarters(heat)
                right += (top_left > bottom_right) if corner == "top_left" else (bottom_right > top_left)
                total += 1
            row.append(overlay(images[0], heats[0]))
        rows.append((backbone, test, correct / total, cells, right / total))
        tiles.append(np.concatenate(row, axis=1))
        print(f"{backbone:26} test {test:.2f}  new images {correct / total:.2f}  map {cells[0]}x{cells[1]}  "
              f"heat in the deciding quarter {right}/{total}", flush=True)
    if args.images:
        from PIL import Image

        args.images.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(tiles, axis=0)).save(args.images)
    print("\n| backbone | test accuracy | on the new images | feature map | heat in the deciding quarter |\n"
          "| --- | --- | --- | --- | --- |")
    for backbone, test, accuracy, cells, share in rows:
        print(f"| {backbone} | {test:.2f} | {accuracy:.2f} | {cells[0]}x{cells[1]} | {share:.2f} |")


if __name__ == "__main__":
    main()
