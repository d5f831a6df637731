"""A ``fit --teacher`` model's forward pass in float32 against the student's mixed policy (issue 27).

    python benchmarks/teacher_precision.py TEACHER [--policy mixed_bfloat16] [--batch 32] [--runs 50]

TEACHER is a run folder or ``.keras`` model. It is loaded as ``fit --teacher`` loads it
(:func:`kclassify.training.distill.load_teachers`), once computing in float32 (as its run folder saves
it) and once under ``--policy`` (what a student trained with ``--mixed-precision`` gets), and each
answers batches of random pixels at the teacher's input size: the median milliseconds per batch of
three rounds of ``--runs`` compiled calls, taken in turn, and how far the two answers are apart (largest
probability difference, share of equal arg-maxes). What this costs a student's epochs needs a fit:
``kclassify fit --teacher`` with and without the change (docs/benchmarks.md, "A teacher that computes
as its student does").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("--policy", default="mixed_bfloat16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from kclassify.inference import load_predictor
    from kclassify.training.distill import load_teachers

    classes = load_predictor(args.teacher).labels
    arms = {policy: load_teachers(args.teacher, classes, policy)[0] for policy in ("float32", args.policy)}
    size = arms["float32"].image_size
    images = tf.random.stateless_uniform((int(args.batch), size, size, 3), (0, 1), 0, 255)
    calls = {policy: tf.function(teacher.probabilities) for policy, teacher in arms.items()}
    answers = {policy: call(images).numpy() for policy, call in calls.items()}  # traced before timing
    times = {policy: [] for policy in calls}
    for _ in range(3):
        for policy, call in calls.items():
            start = time.perf_counter()
            for _ in range(int(args.runs)):
                out = call(images)
            out.numpy()
            times[policy].append((time.perf_counter() - start) / int(args.runs) * 1000)
    print(f"teacher {Path(args.teacher)}, input {size} px, batches of {args.batch}")
    print("| policy | ms per batch (three rounds) | median |")
    print("| --- | --- | --- |")
    for policy, ms in times.items():
        print(f"| {policy} | {', '.join(f'{m:.1f}' for m in ms)} | {statistics.median(ms):.1f} |")
    a, b = answers["float32"], answers[args.policy]
    print(f"largest probability difference {np.abs(a - b).max():.4f}; "
          f"equal arg-max {(a.argmax(1) == b.argmax(1)).mean():.3f}; "
          f"speed-up {statistics.median(times['float32']) / statistics.median(times[args.policy]):.2f}x")


if __name__ == "__main__":
    main()
