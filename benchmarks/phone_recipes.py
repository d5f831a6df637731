"""Which recipe survives the phone's resize: candidates trained side by side over several splits (issue 26).

    python benchmarks/phone_recipes.py DATA --out bench/phone [--sizes 32 64] [--seeds 1 2 3] [--epochs 10]
        [any fit flag, given to every fit]

For each working size S, split seed and candidate, one ``kclassify fit`` (which scores the test split
through kclassify's own antialiased resize), then ``kclassify evaluate RUN --preprocess mediapipe`` (the
same model fed the test photos as MediaPipe's ImageClassifier resizes them on a phone). Candidates:

- ``base``: ``--image-size S --input-scale 1 --phone-resize 0``, the recipe before this benchmark;
- ``mix``: ``--phone-resize 0.5``: half the training images, drawn afresh each epoch, resized as the
  phone does;
- ``scale2``: ``--input-scale 2``: the model takes 2S px and averages 2x2 blocks first, so the backbone
  works at S px as in ``base`` and the phone's plain resize is a milder one;
- ``scale2mix``: both;
- ``scale4mix``: both, with a 4S px input (for photos over 4 times S).

Prints a table of mean accuracies per (size, candidate), and ``kclassify compare`` of each candidate against
``base`` on every split (phone path and kclassify path). Runs already in --out are reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CANDIDATES = {  # name -> its flags at image size S (every flag given, whatever the defaults are)
    "base": lambda s: ["--image-size", str(s), "--input-scale", "1", "--phone-resize", "0"],
    "mix": lambda s: ["--image-size", str(s), "--input-scale", "1", "--phone-resize", "0.5"],
    "scale2": lambda s: ["--image-size", str(s), "--input-scale", "2", "--phone-resize", "0"],
    "scale2mix": lambda s: ["--image-size", str(s), "--input-scale", "2", "--phone-resize", "0.5"],
    "scale4mix": lambda s: ["--image-size", str(s), "--input-scale", "4", "--phone-resize", "0.5"],
}
KCLASSIFY = [sys.executable, "-m", "kclassify"]


def accuracy(folder: Path) -> float:
    return json.loads((folder / "report.json").read_text())["headline"]["accuracy"]


def run_one(data: str, out: Path, size: int, seed: int, name: str, epochs: int, extra: list[str]) -> Path:
    run = out / f"s{size}-seed{seed}-{name}"
    if not (run / "evaluation" / "report.json").is_file():
        subprocess.run([*KCLASSIFY, "fit", "--data", data, "--epochs", str(epochs), "--seed", str(seed),
                        "--output", str(run), *CANDIDATES[name](size), *extra], check=True)
    if not (run / "evaluation-mediapipe" / "report.json").is_file():
        subprocess.run([*KCLASSIFY, "evaluate", str(run), "--preprocess", "mediapipe"], check=True,
                       stdout=subprocess.DEVNULL)
    return run


def compare(a: Path, b: Path) -> dict:
    out = subprocess.run([*KCLASSIFY, "compare", str(a), str(b), "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--out", type=Path, default=Path("bench/phone_recipes"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--candidates", nargs="+", default=["base", "mix", "scale2", "scale2mix"],
                        choices=list(CANDIDATES))
    args, extra = parser.parse_known_args()  # other flags go to every fit
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            for name in args.candidates:
                run = run_one(args.data, args.out, size, seed, name, args.epochs, extra)
                rows.append({"size": size, "seed": seed, "candidate": name, "run": str(run),
                             "kclassify": accuracy(run / "evaluation"),
                             "phone": accuracy(run / "evaluation-mediapipe")})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'size':>4} {'candidate':10} {'kclassify':>9} {'phone':>7} {'gap':>6}   (means over seeds {args.seeds})")
    for size in args.sizes:
        for name in args.candidates:
            sel = [r for r in rows if r["size"] == size and r["candidate"] == name]
            k = sum(r["kclassify"] for r in sel) / len(sel)
            p = sum(r["phone"] for r in sel) / len(sel)
            print(f"{size:4} {name:10} {k:9.4f} {p:7.4f} {100 * (k - p):+6.1f}")
    if "base" in args.candidates:
        print("\nkclassify compare, candidate - base, per split: accuracy points [95% CI], McNemar p")
        for size in args.sizes:
            for name in [c for c in args.candidates if c != "base"]:
                for path in ("evaluation", "evaluation-mediapipe"):
                    cells = []
                    for seed in args.seeds:
                        base, cand = (args.out / f"s{size}-seed{seed}-{n}" / path for n in ("base", name))
                        c = compare(base, cand)
                        d = c["accuracy_difference"]
                        cells.append(f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f},{100 * d['high']:+.1f}] "
                                     f"p={c['mcnemar_p']:.2g}")
                    label = "phone" if path.endswith("mediapipe") else "kclassify"
                    print(f"{size:4} {name:9} {label:9} " + "  ".join(cells))


if __name__ == "__main__":
    main()
