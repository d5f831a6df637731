"""The accuracy-per-millisecond front of phone models: mobile backbones alone and distilled (issue 27).

    python benchmarks/phone_front.py DATA --out bench/front [--sizes 64 96] [--seeds 1 2 3] [--retime]
        [--minutes 2.5] [--backbones small_cnn mobilenet_v3_small efficientnet_lite0 mobilenet_v4_conv_small]
        [--teacher RUN[,RUN...] (may hold {seed}) | --teacher-minutes 8 --teacher-flags "--backbone small_cnn --image-size 64"]
        [any fit flag, given to every student]

For each split seed, a teacher (``--teacher``, e.g. ``tune --then-fit --distill K``'s ``teachers/``; by
default one trained here per seed with ``--teacher-flags`` for ``--teacher-minutes``), then for each
input size and backbone two students trained from scratch with the same wall time (``fit
--time-budget``, which also pays for the teacher's forward passes): alone, and distilled from the
teacher (``--teacher``). Each student is exported (``tflite,tflite-int8``) and scored from
``export_report.json``: test accuracy through kclassify's resize (the run's own evaluation), through
the phone's (the float32 .tflite fed MediaPipe's resize, issue 26), int8 accuracy, int8 and float32
single-image latency (LiteRT, XNNPACK, 1 thread, this machine) and file size. The distilled student
is compared with its alone twin by ``kclassify compare`` (paired, same test images).

Writes ``front.csv``, ``front.png`` (test accuracy against int8 latency, each backbone and size alone and
distilled; pooled over seeds) and prints the table. Runs already in --out are reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

KCLASSIFY = [sys.executable, "-m", "kclassify"]
BACKBONES = ["small_cnn", "mobilenet_v3_small", "efficientnet_lite0", "mobilenet_v4_conv_small"]


def _run(args: list[str]) -> int:
    print("$ kclassify " + " ".join(args), flush=True)
    return subprocess.run([*KCLASSIFY, *args]).returncode


def fit(data: str, run: Path, seed: int, flags: list[str]) -> Path:
    if not (run / "evaluation" / "report.json").is_file():
        # the export gate may reject a file (exit 1): its figures are still in export_report.json
        _run(["fit", "--data", data, "--seed", str(seed), "--output", str(run), "--weights", "none",
              "--export", "tflite,tflite-int8", *flags])
    return run


def retime(runs_: list[Path], rounds: int = 3, runs: int = 100) -> dict[Path, dict]:
    """Single-image latency of every run's two .tflite files again, now (export timed them while other fits ran).

    The files are timed in turn, ``rounds`` times round all of them, and each keeps the fastest of its
    medians: a file timed right after a heavy one, or while the machine's neighbours were busy, is not
    penalised (on this VM the same file's median moved by a third from one moment to the next).
    """
    import numpy as np

    from kclassify.inference import load_predictor

    files = [(run, key, run / "export" / name) for run in runs_
             for key, name in (("int8_ms", "model_int8.tflite"), ("float_ms", "model.tflite"))
             if (run / "export" / name).is_file()]
    predictors = {path: load_predictor(path, threads=1) for _, _, path in files}
    best: dict[Path, dict] = {}
    for _ in range(rounds):
        for run, key, path in files:
            predictor = predictors[path]
            image = np.random.default_rng(0).integers(0, 256, (predictor.image_size,) * 2 + (3,), np.uint8)
            ms = predictor.latency_ms(image, runs=runs)
            best.setdefault(run, {})[key] = round(min(ms, best.get(run, {}).get(key, ms)), 3)
    return best


def figures(run: Path) -> dict:
    export = json.loads((run / "export" / "export_report.json").read_text())
    rows = {f["format"]: f for f in export["formats"]}
    int8, f32 = rows.get("tflite-int8", {}), rows.get("tflite", {})
    headline = json.loads((run / "evaluation" / "report.json").read_text())["headline"]
    return {"kclassify": headline["accuracy"], "phone": f32.get("phone_accuracy"),
            "int8_accuracy": int8.get("accuracy"), "int8_phone": int8.get("phone_accuracy"),
            "int8_ms": int8.get("latency_ms"), "float_ms": f32.get("latency_ms"),
            "int8_kb": round((int8.get("size_bytes") or 0) / 1024, 1), "int8_status": int8.get("status")}


def ensemble(data: str, spec: str) -> dict:
    """The teachers' test accuracy on their split: each member's (its run's own evaluation) and that of their
    averaged probabilities, the targets the students learn from. Members are run folders of one split."""
    import numpy as np

    from kclassify.inference import load_predictor

    members = [Path(p) for p in spec.split(",")]
    tests = [[r for r in csv.DictReader(open(m / "split.csv")) if r["split"] == "test"] for m in members]
    if any(t != tests[0] for t in tests):
        raise SystemExit(f"the teachers {spec} were not trained on one split")
    classes = sorted({r["label"] for r in tests[0]})
    mean = 0
    for member in members:
        predictor = load_predictor(member)
        out = predictor.predict_files([Path(data) / r["path"] for r in tests[0]])
        mean = mean + np.stack([o.probabilities for o in out])[:, [predictor.labels.index(c) for c in classes]]
    truth = np.array([classes.index(r["label"]) for r in tests[0]])
    own = [json.loads((m / "evaluation" / "report.json").read_text())["headline"]["accuracy"] for m in members]
    return {"kclassify": float((mean.argmax(1) == truth).mean()), "members": [round(a, 4) for a in own]}


def _mean(values) -> float:
    """The mean of the values measured (a format that failed has None), NaN if none was."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")


def compare(a: Path, b: Path) -> dict:
    out = subprocess.run([*KCLASSIFY, "compare", str(a), str(b), "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = sorted({(r["backbone"], r["size"]) for r in rows})
    for i, (backbone, size) in enumerate(keys):
        for arm, marker in (("alone", "o"), ("distilled", "*"), ("teacher", "s")):
            sel = [r for r in rows if (r["backbone"], r["size"], r["arm"]) == (backbone, size, arm) and r["int8_ms"]]
            if not sel:
                continue
            x = sum(r["int8_ms"] for r in sel) / len(sel)
            y = sum(r["kclassify"] for r in sel) / len(sel)
            ax.scatter(x, y, marker=marker, s=90 if marker == "*" else 40, color=f"C{i % 10}",
                       label="teacher" if arm == "teacher" else f"{backbone} {size}px {arm}")
    ax.set_xlabel("int8 single-image latency, ms (LiteRT XNNPACK, 1 thread, this machine)")
    ax.set_ylabel("test accuracy (mean over splits)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--out", type=Path, default=Path("bench/front"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--minutes", type=float, default=2.5, help="wall time of each student's fit")
    parser.add_argument("--backbones", nargs="+", default=BACKBONES)
    parser.add_argument("--teacher", help="teacher run folder(s), comma-separated, {seed} standing for the split seed "
                        "(e.g. runs of budget_curve.py: bench/budget/seed{seed}-10min-default; default: one trained "
                        "per seed)")
    parser.add_argument("--teacher-minutes", type=float, default=8.0)
    parser.add_argument("--retime", action="store_true",
                        help="time every .tflite file again at the end, one after another on a quiet machine")
    parser.add_argument("--teacher-flags", default="--backbone small_cnn --image-size 64",
                        help="fit flags of the teacher trained per seed")
    args, extra = parser.parse_known_args()
    budget = f"{args.minutes * 60:.0f}s"
    rows = []
    for seed in args.seeds:
        if args.teacher:
            teacher = args.teacher.replace("{seed}", str(seed))
        else:
            teacher = str(fit(args.data, args.out / f"seed{seed}-teacher", seed,
                              [*args.teacher_flags.split(), "--time-budget", f"{args.teacher_minutes * 60:.0f}s"]))
        if not args.teacher:
            rows.append({"seed": seed, "size": "", "backbone": "teacher", "arm": "teacher",
                         **figures(Path(teacher)), "vs_alone_points": "", "mcnemar_p": "", "only_alone": "", "only_distilled": "",
                         "run": teacher})
            print(json.dumps(rows[-1]), flush=True)
        else:  # printed only: the given teachers were not exported here
            print(json.dumps({"seed": seed, "teachers": teacher, **ensemble(args.data, teacher)}), flush=True)
        for size in args.sizes:
            for backbone in args.backbones:
                flags = ["--backbone", backbone, "--image-size", str(size), "--time-budget", budget, *extra]
                runs = {"alone": fit(args.data, args.out / f"seed{seed}-{backbone}-{size}-alone", seed, flags),
                        "distilled": fit(args.data, args.out / f"seed{seed}-{backbone}-{size}-distilled", seed,
                                         [*flags, "--teacher", teacher])}
                diff = compare(runs["alone"], runs["distilled"])
                for arm, run in runs.items():
                    rows.append({"seed": seed, "size": size, "backbone": backbone, "arm": arm, **figures(run),
                                 "vs_alone_points": round(100 * diff["accuracy_difference"]["value"], 1)
                                 if arm == "distilled" else "",
                                 "mcnemar_p": round(diff["mcnemar_p"], 4) if arm == "distilled" else "",
                                 "only_alone": diff["only_a_right"] if arm == "distilled" else "",
                                 "only_distilled": diff["only_b_right"] if arm == "distilled" else "",
                                 "run": str(run)})
                    print(json.dumps(rows[-1]), flush=True)
    if args.retime:
        timed = retime(list(dict.fromkeys(Path(row["run"]) for row in rows)))
        for row in rows:
            row.update(timed.get(Path(row["run"]), {}))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "front.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "front.png")
    print(f"\n{'backbone':26} {'px':>4} {'arm':9} {'test':>6} {'phone':>6} {'int8 ms':>8} {'fp32 ms':>8} {'KB':>7}"
          f"   (means over seeds {args.seeds})")
    for backbone in args.backbones:
        for size in args.sizes:
            for arm in ("alone", "distilled"):
                sel = [r for r in rows if (r["backbone"], r["size"], r["arm"]) == (backbone, size, arm)]
                mean = {k: _mean(r[k] for r in sel) for k in ("kclassify", "phone", "int8_ms", "float_ms", "int8_kb")}
                print(f"{backbone:26} {size:4} {arm:9} {mean['kclassify']:6.3f} {mean['phone']:6.3f} "
                      f"{mean['int8_ms']:8.2f} {mean['float_ms']:8.2f} {mean['int8_kb']:7.0f}")
    distilled = [r for r in rows if r["arm"] == "distilled"]
    alone, taught = sum(r["only_alone"] for r in distilled), sum(r["only_distilled"] for r in distilled)
    from kclassify.evaluation.compare import mcnemar_p

    print(f"\ndistilled against alone, pooled over every backbone, size and seed: {taught} images only the "
          f"distilled student got right, {alone} only the one alone; McNemar p = {mcnemar_p(alone, taught):.3g}")
    teachers = [r for r in rows if r["arm"] == "teacher"]
    if teachers:
        mean = {k: _mean(r[k] for r in teachers) for k in ("kclassify", "phone", "int8_ms", "float_ms", "int8_kb")}
        print(f"{'teacher (' + args.teacher_flags + ')':31} {'teacher':9} {mean['kclassify']:6.3f} "
              f"{mean['phone']:6.3f} {mean['int8_ms']:8.2f} {mean['float_ms']:8.2f} {mean['int8_kb']:7.0f}")
    print(f"\n{args.out / 'front.csv'}, {args.out / 'front.png'}")


if __name__ == "__main__":
    main()
