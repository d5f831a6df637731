"""Speed and peak memory of `kclassify audit` on a dataset and on a generated folder of many small images.

    python benchmarks/audit_speed.py ../shared/datasets/intel_scenes --generated 20000

Each audit runs as its own process (`kclassify audit`), so its peak resident memory (the child's
ru_maxrss) is the audit's own. The generated folder holds smooth random 64x64 JPEGs in 10 classes
(8x8 random colours upsampled: distinct pictures) in a temporary folder removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def generate(root: Path, count: int, classes: int = 10) -> None:
    from PIL import Image

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        small = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
        folder = root / f"class_{i % classes}"
        small.resize((64, 64), Image.BICUBIC).save(folder / f"img_{i:06d}.jpg", quality=90)

    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))


def run_audit(data: Path, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kclassify.cli", "audit", str(data), "--output", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads((out / "audit.json").read_text())
    return {"files": report["files"], "audit_seconds": report["seconds"], "command_seconds": wall,
            "images_per_second": report["images_per_second"], "peak_rss_mb": max(peak, before) / 1024,
            "duplicate_groups": len(report["duplicates"]["groups"]), "summary": done.stdout.strip().splitlines()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="?", type=Path, help="a dataset to audit (e.g. ../shared/datasets/intel_scenes)")
    p.add_argument("--generated", type=int, default=20000, help="images in the generated folder (0: none)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kclassify-audit-bench-"))
    try:
        rows = []
        if args.data:
            rows.append((str(args.data), run_audit(args.data, tmp / "report-data")))
        if args.generated:
            folder = tmp / "generated"
            t = time.perf_counter()
            generate(folder, args.generated)
            print(f"generated {args.generated} 64x64 JPEGs in {time.perf_counter() - t:.1f} s")
            rows.append((f"generated {args.generated}", run_audit(folder, tmp / "report-generated")))
        print(f"{'data':40} {'files':>7} {'audit s':>8} {'command s':>10} {'images/s':>9} {'peak MB':>8} {'dup groups':>10}")
        for name, r in rows:
            print(f"{name[-40:]:40} {r['files']:7d} {r['audit_seconds']:8.1f} {r['command_seconds']:10.1f} "
                  f"{r['images_per_second']:9.0f} {r['peak_rss_mb']:8.0f} {r['duplicate_groups']:10d}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
