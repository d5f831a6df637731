"""Export formats side by side: size, accuracy and single-image latency of every file, per backbone.

    python benchmarks/export_formats.py ../shared/datasets/intel_scenes --epochs 6 --output /tmp/export-bench

Trains small_cnn, mobilenet_v2 and mobilenet_v3_small from scratch at 96 px (BatchNorm momentum
0.9; no ImageNet download needed), unless a finished run already sits in OUTPUT/<backbone>, then
runs `kclassify export --formats all` on each and prints one table. Latency is the median of
single-image runs through the inference layer on this machine (LiteRT with XNNPACK, 1 thread by
default). Goals for tflite-int8 against the float32 file: size <= 0.30x, accuracy drop <= 1 point,
latency <= 0.65x.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKBONES = ("small_cnn", "mobilenet_v2", "mobilenet_v3_small")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--output", default="/tmp/kclassify-export-bench")
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calibration-images", type=int, default=200)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("kclassify").setLevel(logging.INFO)

    from kclassify import fit
    from kclassify.export import export, format_table

    rows = []
    for backbone in args.backbones.split(","):
        run = Path(args.output) / backbone
        if not (run / "model.keras").is_file():
            start = time.perf_counter()
            fit(data=args.data_dir, backbone=backbone, image_size=args.image_size, epochs=args.epochs,
                bn_momentum=0.9, output=run, verbose=2)
            print(f"{backbone}: trained in {time.perf_counter() - start:.0f} s")
        result = export(run, "all", max_accuracy_drop=100.0, threads=args.threads,
                        calibration_images=args.calibration_images)
        print(f"\n{backbone} ({args.image_size} px)\n{format_table(result)}\n", flush=True)
        rows += [(backbone, result.keras, f) for f in result.formats]

    print(f"\nAll backbones: {args.data_dir}, {args.image_size} px, latency with {args.threads} LiteRT thread(s)")
    header = ("backbone", "format", "size MB", "size x", "accuracy", "drop pts", "agree", "latency ms", "latency x")
    table = [header]
    for backbone, keras, f in rows:
        table.append((backbone, f.format, _n(f.size_bytes and f.size_bytes / 1e6, ".2f"), _n(f.size_vs_tflite, ".2f"),
                      _n(f.accuracy, ".4f"), _n(f.accuracy_drop, "+.2f"), _n(f.agreement, ".3f"),
                      _n(f.latency_ms, ".3f"), _n(f.latency_vs_tflite, ".2f")))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print("\ntflite-int8 goals: size x <= 0.30, drop <= 1.0 point, latency x <= 0.65")
    for backbone, _, f in rows:
        if f.format == "tflite-int8" and f.size_vs_tflite is not None:
            ok = [f.size_vs_tflite <= 0.30, f.accuracy_drop <= 1.0, (f.latency_vs_tflite or 9) <= 0.65]
            print(f"  {backbone}: size {'met' if ok[0] else 'MISSED'}, accuracy {'met' if ok[1] else 'MISSED'}, "
                  f"latency {'met' if ok[2] else 'MISSED'}; off XNNPACK: {f.outside_xnnpack or 'none'}")


def _n(value, spec):
    return "" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
