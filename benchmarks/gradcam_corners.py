"""Does Grad-CAM find the corner that decides the class, for each backbone family? (issue 30)

    python benchmarks/gradcam_corners.py --out bench/corners [--rule position|colour] [--size 128]
        [--per-class 60] [--epochs 30]
        [--backbones small_cnn mobilenet_v3_small efficientnet_lite0 mobilenet_v4_conv_small resnet50]
        [--images docs/images/gradcam_corners.png]

A generated set of grey noise with a bright patch in one corner. ``--rule position``: the corner is the
class (top-left or bottom-right; the suite's first Grad-CAM set, at a size where the mobile backbones'
last feature map has more than 2x2 cells). ``--rule colour``: the patch's colour is the class (yellow or
cyan, as bright as each other) and its corner is drawn at random from the four: what decides the class
is in the patch, wherever it is, not in where it is. Each backbone is trained from scratch
(``weights="none"``: no ImageNet weights here) by ``kclassify.fit``, then Grad-CAM
(:func:`kclassify.inference.explain.gradcam`) of the
predicted class is taken on 20 new images per class. Printed per backbone: the run's test accuracy, its
accuracy on the new images, the last feature map's cells, the share of the new images whose mean heat
is higher in the deciding quarter than in the opposite one (a model that looks anywhere: about half;
ties count as wrong), and the share whose deciding quarter is the hottest of the four (chance: a
quarter). ``--images`` writes one overlay per backbone and class (rows in the order of ``--backbones``,
the first class first).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKBONES = ["small_cnn", "mobilenet_v3_small", "efficientnet_lite0", "mobilenet_v4_conv_small", "resnet50"]
QUARTERS = ("top_left", "top_right", "bottom_left", "bottom_right")
OPPOSITE = dict(zip(QUARTERS, reversed(QUARTERS)))
COLOURS = {"yellow": (250, 230, 40), "cyan": (40, 230, 250)}
CLASSES = {"position": ("top_left", "bottom_right"), "colour": tuple(COLOURS)}


def corner_image(rule: str, label: str, seed: int, size: int):
    """Grey noise with a patch on a third of the side in one corner, and the quarter that decides its class.

    ``position``: a yellow patch in the corner ``label`` names (the suite's image, scaled); ``colour``: a
    patch of the colour ``label`` names in a corner drawn from ``seed``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(40, 120, (size, size, 3)).astype(np.uint8)
    corner = label if rule == "position" else QUARTERS[rng.integers(4)]
    colour = COLOURS["yellow" if rule == "position" else label]
    patch = size * 10 // 32
    rows = slice(0, patch) if corner.startswith("top") else slice(size - patch, size)
    cols = slice(0, patch) if corner.endswith("left") else slice(size - patch, size)
    image[rows, cols] = colour
    return image, corner


def write_set(rule: str, root: Path, size: int, per_class: int) -> Path:
    from PIL import Image

    for k, label in enumerate(CLASSES[rule]):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(corner_image(rule, label, 1000 * (k == 0) + i, size)[0]).save(root / label / f"{i}.png")
    return root


def quarters(heat) -> dict[str, float]:
    """Mean heat in each quarter (an odd side's middle row and column in none)."""
    h, w = heat.shape
    top, bottom, left, right = slice(0, h // 2), slice((h + 1) // 2, h), slice(0, w // 2), slice((w + 1) // 2, w)
    return {"top_left": float(heat[top, left].mean()), "top_right": float(heat[top, right].mean()),
            "bottom_left": float(heat[bottom, left].mean()), "bottom_right": float(heat[bottom, right].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/corners"))
    parser.add_argument("--rule", choices=sorted(CLASSES), default="position")
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

    prefix = "" if args.rule == "position" else f"{args.rule}-"  # reused runs match
    out = args.out / f"{prefix}{args.size}px-{args.per_class}-{args.epochs}ep-bn{args.bn_momentum:g}"
    data = out / "data" if (out / "data").is_dir() else write_set(args.rule, out / "data", args.size, args.per_class)
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
        right, hottest, total, correct, cells, row = 0, 0, 0, 0, None, []
        for k, label in enumerate(CLASSES[args.rule]):  # each class its own noise (and corners)
            drawn = [corner_image(args.rule, label, 5000 + 100 * k + i, args.size) for i in range(20)]
            images = np.stack([image for image, _ in drawn])
            heats, picked = gradcam(model, images)
            cells = heats.shape[1:]
            if min(cells) < 2:
                raise SystemExit(f"{backbone}'s last feature map is {cells[0]}x{cells[1]} at {args.size} px: "
                                 "no quarter to point at; give a larger --size")
            correct += sum(predictor.labels[c] == label for c in picked)
            for heat, (_, corner) in zip(heats, drawn):
                means = quarters(heat)
                right += means[corner] > means[OPPOSITE[corner]]
                hottest += means[corner] > max(v for q, v in means.items() if q != corner)
                total += 1
            row.append(overlay(images[0], heats[0]))
        rows.append((backbone, test, correct / total, cells, f"{right} / {total}", f"{hottest} / {total}"))
        tiles.append(np.concatenate(row, axis=1))
        print(f"{backbone:26} test {test:.2f}  new images {correct / total:.2f}  map {cells[0]}x{cells[1]}  "
              f"deciding quarter hotter than the opposite {right}/{total}, the hottest {hottest}/{total}", flush=True)
    if args.images:
        from PIL import Image

        args.images.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(tiles, axis=0)).save(args.images)
    print("\n| backbone | test accuracy | on the new images | feature map | deciding quarter hotter than the "
          "opposite | the hottest of the four |\n| --- | --- | --- | --- | --- | --- |")
    for backbone, test, accuracy, cells, opposite, hottest in rows:
        print(f"| {backbone} | {test:.2f} | {accuracy:.2f} | {cells[0]}x{cells[1]} | {opposite} | {hottest} |")


if __name__ == "__main__":
    main()
