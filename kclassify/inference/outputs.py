"""What ``kclassify predict`` reads (files and folders) and writes (table, JSON or CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Sequence

from ..settings import PredictSettings
from ..textfiles import text_table
from .predictor import FilePrediction, Predictor



def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], int]:
    """Files as given, folders searched recursively for image files; (files, non-image files skipped).

    A file named explicitly is always kept, whatever its extension, so that it is reported
    if it is not an image; inside folders only image extensions are taken.
    """
    from ..data.files import list_images

    files, skipped = [], 0
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found, counts = list_images(path)
            files += found
            skipped += counts["not_image"]
        else:
            files.append(path)
    return files, skipped


def write_predictions(out: IO[str], results: list[FilePrediction], predictor: Predictor, k: int,
                      fmt: str = "table") -> None:
    """Write each file's top ``k`` classes (or its error) as ``table``, ``json`` or ``csv``."""
    PredictSettings(top_k=k, output_format=fmt).check()
    rows = [(r, predictor.top_k(r.probabilities[None], k)[0] if r.ok else None) for r in results]
    if fmt == "json":
        tta = {"tta": predictor.tta} if predictor.tta != "none" else {}
        doc = [{"path": r.path, "resize": predictor.resize, **tta,
                "predictions": [{"label": lab, "probability": round(p, 6)} for lab, p in top]}
               if r.ok else {"path": r.path, "error": r.error} for r, top in rows]
        json.dump(doc, out, indent=1)
        out.write("\n")
    elif fmt == "csv":
        w = csv.writer(out)
        w.writerow(("path", "rank", "label", "probability", "error"))
        for r, top in rows:
            if r.ok:
                w.writerows((r.path, i, lab, f"{p:.6f}", "") for i, (lab, p) in enumerate(top, 1))
            else:
                w.writerow((r.path, "", "", "", r.error))
    elif fmt == "table":
        table = [(r.path, "  ".join(f"{lab} {p:.3f}" for lab, p in top) if r.ok else f"ERROR: {r.error}")
                 for r, top in rows]
        if table:
            out.write(text_table(table) + "\n")
