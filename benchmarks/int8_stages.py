"""Where a backbone's int8 file gains on float32, stage by stage (issue 27: MobileNetV4 Conv-Small's 0.71x).

    python benchmarks/int8_stages.py [--size 224] [--runs 100]
        [--backbones mobilenet_v4_conv_small efficientnet_lite0]

LiteRT's Python interpreter reports no per-op times, so this times prefixes of the classifier
``kclassify`` builds (untrained, ``weights="none"``: latency depends on the architecture, not the
weights): its preprocessing alone, then the preprocessing and the backbone cut after the last layer at
each spatial resolution (a padding layer counts with the strided convolution after it), then the whole
classifier (pooling and the softmax head added). Every prefix is converted as ``kclassify export``
converts (float32, and full-int8 calibrated on 32 random images: the ranges do not change the kernels);
so from the stem on, the input preprocessing is folded into the stem convolution
(``fold_input_normalization``), while the preprocessing-only prefix, with no convolution to fold into,
shows what it costs unfolded. Each file is timed single-image through LiteRT (XNNPACK, 1 thread): the
median of ``--runs`` calls, three rounds in turn, each file's fastest median. A stage's time is its
prefix's less the previous prefix's (each prefix also pays for writing its output, so read stages of
large outputs with care); with each stage, its layer types, to read which kind of op gains least in
int8. Compare rows of one run only.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def median_ms(model_bytes: bytes, runs: int) -> float:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(model_bytes)
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        image = np.random.default_rng(0).integers(0, 256, inp["shape"]).astype(inp["dtype"])
        times = []
        for i in range(runs + 5):  # five warm-up calls
            interpreter.set_tensor(inp["index"], image)
            start = time.perf_counter()
            interpreter.invoke()
            if i >= 5:
                times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)


def stage_cuts(backbone) -> list[tuple[str, tuple]]:
    """The last layer at each spatial resolution of a functional backbone, in order: (name, output shape).
    A padding layer never ends a stage: it belongs with the strided convolution it pads for."""
    import keras

    cuts = []
    for layer in backbone.layers[1:]:
        if isinstance(layer, keras.layers.ZeroPadding2D):
            continue
        shape = tuple(layer.output.shape[1:3])
        if cuts and cuts[-1][1] == shape:
            cuts[-1] = (layer.name, shape)
        else:
            cuts.append((layer.name, shape))
    return cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v4_conv_small", "efficientnet_lite0"])
    args = parser.parse_args()

    import keras
    import numpy as np

    from kclassify.export.tflite import convert, for_tflite, full_integer_options
    from kclassify.models.build import build_classifier

    calibration = np.random.default_rng(1).uniform(0, 255, (32, args.size, args.size, 3)).astype(np.float32)
    for name in args.backbones:
        classifier = build_classifier(name, 6, args.size, weights="none", input_scale=1)
        at = next(i for i, layer in enumerate(classifier.layers) if isinstance(layer, keras.Model))
        backbone = classifier.layers[at]
        inputs = keras.Input((args.size, args.size, 3))
        x = inputs
        for layer in classifier.layers[1:at]:  # the preprocessing: a chain of layers before the backbone
            x = layer(x)
        rows = []  # (label, output side, prefix model, its new layers' types)
        if at > 1:
            rows.append(("(preprocessing)", f"{args.size}x{args.size}", keras.Model(inputs, x),
                         collections.Counter(type(layer).__name__ for layer in classifier.layers[1:at])))
        previous = set()
        for cut, shape in stage_cuts(backbone):
            prefix = keras.Model(backbone.input, backbone.get_layer(cut).output)
            names = {layer.name for layer in prefix.layers}
            rows.append((cut, "x".join(map(str, shape)), keras.Model(inputs, prefix(x)),
                         collections.Counter(type(backbone.get_layer(n)).__name__ for n in names - previous
                                             if not isinstance(backbone.get_layer(n), keras.layers.InputLayer))))
            previous = names
        rows.append(("(classifier: + head)", "", classifier,
                     collections.Counter(type(layer).__name__ for layer in classifier.layers[at + 1:])))
        models = [row[2] for row in rows]
        files = [(convert(for_tflite(m), args.size, {}),
                  convert(for_tflite(m, integer=True), args.size, full_integer_options(calibration))) for m in models]
        best = [[float("inf"), float("inf")] for _ in files]
        for _ in range(3):  # in turn, each file's fastest median: the VM's neighbours come and go
            for row, (fp32, int8) in zip(best, files):
                row[0] = min(row[0], median_ms(fp32, args.runs))
                row[1] = min(row[1], median_ms(int8, args.runs))
        print(f"\n{name} at {args.size} px: cumulative and per-stage single-image ms (LiteRT, XNNPACK, 1 thread)")
        print(f"{'after':28} {'out':>9} {'fp32':>7} {'int8':>7} {'stage fp32':>10} {'stage int8':>10} "
              f"{'int8/fp32':>9}  layers")
        last = (0.0, 0.0)
        for (cut, out, _, layer_kinds), (fp32, int8) in zip(rows, best):
            stage = (fp32 - last[0], int8 - last[1])
            print(f"{cut:28} {out:>9} {fp32:7.2f} {int8:7.2f} {stage[0]:10.2f} {stage[1]:10.2f} "
                  f"{stage[1] / stage[0] if stage[0] > 0 else float('nan'):9.2f}  "
                  + ", ".join(f"{k} {v}" for k, v in layer_kinds.most_common()))
            last = (fp32, int8)


if __name__ == "__main__":
    main()
