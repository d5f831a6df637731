"""Float32 against full-int8 TFLite latency of each backbone at one input size (issue 27's 224 px goal).

    python benchmarks/int8_latency.py DATA [--size 224] [--runs 50] [--unfolded-too]
        [--backbones efficientnet_lite0 mobilenet_v4_conv_small mobilenet_v3_small mobilenet_v2]

Latency depends on the architecture and input size, not on the weights, so each classifier is built
untrained (6 classes, ``weights="none"``), converted as ``kclassify export`` converts it (float32,
and full-int8 with uint8 input calibrated on 100 images of DATA decoded at the size), loaded through
kclassify's inference layer (LiteRT, XNNPACK, 1 thread) and timed: the median of ``--runs``
single-image calls, three times in turn, keeping each file's fastest median. Also the int8 file's size and the ops left outside XNNPACK. The accuracy an int8
file loses needs trained weights: ``benchmarks/phone_front.py`` measures it on trained students.
``--unfolded-too`` also converts each model without folding its input normalization into its first
convolution (``kclassify.models.fold.fold_input_normalization``, what export does since issue 27's
int8 profile) and times those files in the same rounds, side by side.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKBONES = ["efficientnet_lite0", "mobilenet_v4_conv_small", "mobilenet_v3_small", "mobilenet_v2"]


def calibration_images(data: str, size: int, count: int = 100):
    import numpy as np

    from kclassify.data import prepare_data
    from kclassify.data.pipeline import decode_image

    prepared = prepare_data(data, min_images=1)
    paths = [r.decode_path for r in prepared.records if r.split == "train"][:count]
    return np.stack([decode_image(p, size).numpy() for p in paths]).astype(np.float32)


def timed(model_bytes: bytes, runs: int) -> tuple[float, dict]:
    import numpy as np

    from kclassify.inference import load_predictor
    from kclassify.textfiles import write_labels

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(model_bytes)
        write_labels(Path(tmp) / "labels.txt", [f"class{i}" for i in range(6)])
        predictor = load_predictor(path, threads=1)
        image = np.random.default_rng(0).integers(0, 256, (predictor.image_size, predictor.image_size, 3), np.uint8)
        return predictor.latency_ms(image, runs=runs), predictor.ops_outside_delegate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--backbones", nargs="+", default=BACKBONES)
    parser.add_argument("--unfolded-too", action="store_true",
                        help="also time each model converted without folding its input normalization")
    args = parser.parse_args()

    from kclassify.export.tflite import convert, for_tflite, full_integer_options, integer_friendly
    from kclassify.models.build import build_classifier

    calibration = calibration_images(args.data, args.size)
    rows = []
    for name in args.backbones:
        model = build_classifier(name, 6, args.size, weights="none", input_scale=1)
        variants = {"": (convert(for_tflite(model), args.size, {}),
                         convert(for_tflite(model, integer=True), args.size, full_integer_options(calibration)))}
        if args.unfolded_too:
            variants[" (unfolded)"] = (convert(model, args.size, {}),
                                       convert(integer_friendly(model), args.size, full_integer_options(calibration)))
        best = {key: [float("inf"), float("inf"), {}] for key in variants}
        for _ in range(3):  # in turn, the fastest median of each: the VM's neighbours come and go
            for key, (float32, int8) in variants.items():
                best[key][0] = min(best[key][0], timed(float32, args.runs)[0])
                ms, best[key][2] = timed(int8, args.runs)
                best[key][1] = min(best[key][1], ms)
        for key, (float_ms, int8_ms, outside) in best.items():
            int8 = variants[key][1]
            rows.append((name + key, float_ms, int8_ms, len(int8) / 1024, outside))
            print(f"{name}{key}: float32 {float_ms:.2f} ms, int8 {int8_ms:.2f} ms ({int8_ms / float_ms:.2f}x), "
                  f"{len(int8) / 1024:.0f} KB, outside XNNPACK {outside}", flush=True)
    print(f"\n{'backbone':37} {'px':>4} {'fp32 ms':>8} {'int8 ms':>8} {'int8/fp32':>9} {'int8 KB':>8}  "
          "ops outside XNNPACK")
    for name, f, i, kb, outside in rows:
        print(f"{name:37} {args.size:4} {f:8.2f} {i:8.2f} {i / f:9.2f} {kb:8.0f}  "
              + (", ".join(f"{op} x{n}" for op, n in outside.items()) or "none"))


if __name__ == "__main__":
    main()
