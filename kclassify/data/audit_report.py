"""The audit's findings as ``audit.json`` (stable keys), a one-screen summary and ``audit.html``.

``audit.json``:

- ``schema``, ``created``, ``seconds``, ``images_per_second``, ``settings``
- ``source``: ``spec``, ``kind``, ``root``; ``split``: where the split came from and counts per split
- ``files``: images listed; ``readable``: how many training can read
- ``checks``: one entry per single-file problem, each ``{"count", "files": [{"path", "label", "split",
  "detail"}]}``: ``unreadable``, the format quirks (``cmyk``, ``sixteen_bit``, ``palette``,
  ``transparency``, ``animated``, ``exif_rotated``, ``extension_mismatch``), the sizes (``tiny``,
  ``extreme_aspect``, ``huge``), and the stray files (``hidden_files``, ``non_image_files``, paths only)
- ``duplicates``: ``threshold``; ``too_small_for_near`` (images under 32 px a side, compared by bytes
  only); ``groups`` (each: ``kind`` exact|near, ``max_distance``, ``labels``,
  ``splits``, ``contradictory``, ``leak``, ``test_in_train``, ``members``); counts of groups and files
  ``exact``, ``near``, ``within_class``, ``across_classes``, ``across_splits``
- ``class_balance``: ``counts`` per class (readable images), ``imbalance_ratio`` (largest / smallest),
  ``recommendation`` (the ``fit`` setting to use, or null)
- ``manifest`` (with ``--write-manifest``): ``path``, ``kept``, ``unreadable``, ``duplicates_dropped``,
  ``contradictory_dropped``
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from ..htmlpage import escape, gallery, page, section, tile
from . import duplicates
from .inspect import QUIRKS

SIZE_CHECKS = ("tiny", "extreme_aspect", "huge")
IMBALANCE_WEIGHTS_FROM = 1.5  # largest/smallest class ratio from which class weights are advised
SAMPLE = 12  # thumbnails per problem in the page
GROUPS_SHOWN = 300  # duplicate groups drawn in the page (all are in audit.json)


def build_report(source, files, stray: dict, settings, split_from: str, started: float) -> dict:
    checks = {"unreadable": _listing((f, f.error) for f in files if f.error and "huge" not in f.notes)}
    for quirk in QUIRKS:
        checks[quirk] = _listing((f, f.notes[quirk]) for f in files if quirk in f.notes)
    checks["tiny"] = _listing((f, f"{f.width}x{f.height}") for f in files
                              if f.readable and min(f.width, f.height) < settings.min_size)
    checks["extreme_aspect"] = _listing((f, f"{f.width}x{f.height} ({_aspect(f):.1f}:1)") for f in files
                                        if f.readable and _aspect(f) > settings.max_aspect)
    checks["huge"] = _listing((f, f.notes["huge"]) for f in files if "huge" in f.notes)
    checks["hidden_files"] = {"count": len(stray["hidden"]), "files": [{"path": p} for p in stray["hidden"]]}
    checks["non_image_files"] = {"count": len(stray["not_image"]), "files": [{"path": p} for p in stray["not_image"]]}
    readable = [f for f in files if f.readable]
    found = _duplicates(files, settings.near_dup_threshold)
    elapsed = time.time() - started  # listing, reading, decoding, hashing and grouping: all but writing the page
    return {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(elapsed, 2),
        "images_per_second": round(len(files) / max(elapsed, 1e-9), 1),
        "settings": {k: v for k, v in vars(settings).items() if k != "workers"},
        "source": {"spec": source.spec, "kind": source.kind, "root": str(source.root)},
        "split": {"from": split_from, "counts": dict(Counter(f.split for f in files))},
        "files": len(files),
        "readable": len(readable),
        "checks": checks,
        "duplicates": found,
        "class_balance": _balance(readable, source.classes),
    }


def _listing(rows) -> dict:
    files = [{"path": f.path, "label": f.label, "split": f.split, "detail": detail} for f, detail in rows]
    return {"count": len(files), "files": files}


def _aspect(f) -> float:
    return max(f.width, f.height) / max(1, min(f.width, f.height))


def _duplicates(files, threshold: int) -> dict:
    ok = [f for f in files if f.readable]
    # A perceptual hash of a picture smaller than its own 32x32 working size measures the upscaling, not
    # the picture: on the built-in 8x8 digits it joined 128 groups, 8 of them across labels (a 1 and a 7).
    # Such images are compared by their bytes only.
    hashes = [f.phash if min(f.width, f.height) >= duplicates.MIN_SIDE else None for f in ok]
    index = duplicates.groups([f.sha256 for f in ok], hashes, threshold)
    found = [duplicates.describe(g, ok, hashes) for g in index]

    def tally(keep) -> dict:
        chosen = [g for g in found if keep(g)]
        return {"groups": len(chosen), "files": sum(len(g["members"]) for g in chosen)}

    return {
        "threshold": threshold,
        "too_small_for_near": sum(h is None for h in hashes),  # compared by bytes only
        "exact": tally(lambda g: g["kind"] == "exact"),
        "near": tally(lambda g: g["kind"] == "near"),
        "within_class": tally(lambda g: not g["contradictory"]),
        "across_classes": tally(lambda g: g["contradictory"]),
        "across_splits": tally(lambda g: g["leak"]),
        "test_in_train": tally(lambda g: g["test_in_train"]),
        "groups": found,
    }


def _balance(readable, classes: list[str]) -> dict:
    counts = Counter(f.label for f in readable)
    counts = {c: counts.get(c, 0) for c in classes}
    low, high = min(counts.values(), default=0), max(counts.values(), default=0)
    ratio = high / low if low else None
    advise = ratio is None or ratio >= IMBALANCE_WEIGHTS_FROM
    return {"counts": counts, "imbalance_ratio": round(ratio, 3) if ratio else None,
            "recommendation": "--class-weight balanced" if advise and len(counts) > 1 else None}


def summary(report: dict, folder: Path) -> str:
    """One screen: every check with its count, the duplicates, the balance, where the report is."""
    c, d, b = report["checks"], report["duplicates"], report["class_balance"]
    lines = [f"audited {report['files']} files of {report['source']['spec']} in {report['seconds']:.1f} s "
             f"({report['images_per_second']:.0f} images/s): {report['readable']} readable"]
    for name, check in c.items():
        if check["count"]:
            first = check["files"][0]
            lines.append(f"  {name:20} {check['count']:6d}  e.g. {first['path']}"
                         + (f" ({first['detail']})" if first.get("detail") else ""))
    lines.append(f"  duplicates: {d['exact']['groups']} exact and {d['near']['groups']} near groups; "
                 f"{d['within_class']['groups']} within a class, {d['across_classes']['groups']} under different "
                 f"labels, {d['across_splits']['groups']} across splits ({d['test_in_train']['groups']} test images "
                 "copying training images)")
    ratio = b["imbalance_ratio"]
    lines.append(f"  classes: {len(b['counts'])}, {min(b['counts'].values())}-{max(b['counts'].values())} images "
                 f"each (ratio {ratio if ratio else 'n/a'})" + (f"; use {b['recommendation']}" if b["recommendation"]
                                                                else ""))
    if report.get("manifest"):
        m = report["manifest"]
        lines.append(f"  clean manifest: {m['path']} ({m['kept']} files)")
    lines.append(f"report: {folder / 'audit.html'}")
    return "\n".join(lines)


def write_html(path: Path, report: dict, root: Path) -> None:
    d, b = report["duplicates"], report["class_balance"]
    cards = [("files", report["files"]), ("readable", report["readable"]),
             ("unreadable", report["checks"]["unreadable"]["count"]),
             ("duplicate groups", len(d["groups"])), ("under 2 labels", d["across_classes"]["groups"]),
             ("across splits", d["across_splits"]["groups"]), ("imbalance", b["imbalance_ratio"] or "n/a")]
    parts = [f"<h1>Audit of {escape(report['source']['spec'])}</h1>",
             f"<div class=sub>{escape(report['source']['root'])} &middot; split {escape(report['split']['from'])} "
             f"&middot; {report['seconds']} s &middot; {escape(report['created'])}</div>",
             "<div class=cards id=headline>" + "".join(f"<div class=card><b>{escape(v)}</b><span>{escape(k)}</span>"
                                                      "</div>" for k, v in cards) + "</div>",
             section("Class balance", _balance_table(b)),
             section(f"Duplicates ({len(d['groups'])} groups)", _groups(d, root))]
    for name, check in report["checks"].items():
        if check["count"]:
            parts.append(section(f"{name.replace('_', ' ')} ({check['count']})", _sample(check, root)))
    path.write_text(page(f"kclassify audit: {report['source']['spec']}", parts), encoding="utf-8")


def _balance_table(b: dict) -> str:
    top = max(b["counts"].values(), default=1) or 1
    rows = "".join(f"<tr><td>{escape(c)}</td><td>{n}</td><td style='text-align:left'><div style='background:#2b6cb0;"
                   f"height:12px;width:{200 * n / top:.0f}px'></div></td></tr>" for c, n in b["counts"].items())
    advice = f"<p>Imbalanced: train with <code>{escape(b['recommendation'])}</code>.</p>" if b["recommendation"] else ""
    return f"<table id=balance><tr><th>class</th><th>images</th><th></th></tr>{rows}</table>{advice}"


def _groups(d: dict, root: Path) -> str:
    if not d["groups"]:
        return "<p>No duplicates.</p>"
    out = []
    for g in d["groups"][:GROUPS_SHOWN]:
        flags = [f for f, on in (("different labels", g["contradictory"]), ("across splits", g["leak"])) if on]
        title = (f"{g['kind']} copies" + (f" (distance up to {g['max_distance']} bits)" if g["kind"] == "near" else "")
                 + (": <span class=bad>" + ", ".join(flags) + "</span>" if flags else ": within one class"))
        tiles = gallery(tile(str(root / m["path"]), f"{escape(m['label'])} / {escape(m['split'])}", m["path"])
                        for m in g["members"])
        out.append(f"<div class=group><div>{title}</div>{tiles}</div>")
    more = len(d["groups"]) - GROUPS_SHOWN
    return "".join(out) + (f"<p>{more} more groups in audit.json.</p>" if more > 0 else "")


def _sample(check: dict, root: Path) -> str:
    tiles = [tile(str(root / f["path"]) if "label" in f else None, escape(f.get("detail", "")), f["path"])
             for f in check["files"][:SAMPLE]]
    more = check["count"] - SAMPLE
    return gallery(tiles) + (f"<p>{more} more in audit.json.</p>" if more > 0 else "")
