"""``export_report.html``: what each exported file scored, and the images where it disagrees with the Keras model.

The table is ``export_report.json``'s. For every file whose top-1 class differs from the Keras model's on
some test images, a gallery of those images (the most confident disagreements first): the true class,
Keras' answer and the file's, with their probabilities, and Grad-CAM of the Keras model for both
classes, so a user decides whether an int8 file's few disagreements matter (a borderline image both
find hard, or a clear one the file gets wrong).
"""

from __future__ import annotations

from pathlib import Path

from ..htmlpage import data_uri, escape, gallery, page, section, tile


def _cell(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _table(doc: dict) -> str:
    head = ("format", "status", "size", "accuracy", "drop (points)", "agreement", "phone accuracy", "latency ms")
    rows = [("keras", "reference", "", _cell(doc["keras"]["accuracy"], ".4f"), "", "", "",
             _cell(doc["keras"].get("latency_ms"), ".2f"))]
    for f in doc["formats"]:
        size = "" if f["size_bytes"] is None else f"{f['size_bytes'] / 2**20:.2f} MB"
        rows.append((f["format"], f["status"], size, _cell(f["accuracy"], ".4f"), _cell(f["accuracy_drop"], "+.2f"),
                     _cell(f["agreement"], ".2%"), _cell(f["phone_accuracy"], ".4f"), _cell(f["latency_ms"], ".2f")))
    cells = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return "<table id=formats><tr>" + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{cells}</table>"


def _heat(reference, doc: dict) -> dict:
    """(path, class) -> data URI of the Keras model's Grad-CAM for every gallery image's two classes."""
    if reference.kind != "keras":
        return {}
    from ..inference.explain import overlay_pngs

    index = {name: i for i, name in enumerate(reference.labels)}
    wanted = list(dict.fromkeys((d["path"], c) for f in doc["formats"] for d in f["disagreements"]
                                for c in (d["keras"], d["file"])))
    pngs = overlay_pngs(reference, [p for p, _ in wanted], [index[c] for _, c in wanted])
    return {key: data_uri(data, "image/png") for key, data in zip(wanted, pngs) if data is not None}


def _disagreements(f: dict, heat: dict) -> str:
    share = 1 - (f["agreement"] or 0)
    intro = (f"<p>{escape(f['format'])} gives another class than the Keras model on {share:.2%} of the "
             f"{escape(f.get('split', 'test'))} images; the {len(f['disagreements'])} most confident are shown.</p>")
    tiles = []
    for d in f["disagreements"]:
        caption = (f"true: {escape(d['true'])}<br><span class=good>keras: {escape(d['keras'])} "
                   f"({d['keras_probability']:.1%})</span><br><span class=bad>{escape(f['format'])}: "
                   f"{escape(d['file'])} ({d['file_probability']:.1%})</span>")
        beside = [(heat[d["path"], c], f"keras looks for {c}") for c in (d["keras"], d["file"]) if (d["path"], c) in heat]
        tiles.append(tile(d["path"], caption, Path(d["path"]).name, beside))
    return intro + gallery(tiles)


def write_export_page(path: Path, doc: dict, reference) -> Path:
    """Write the page for ``doc`` (``export_report.json``'s content); ``reference`` is the run's Keras predictor."""
    heat = _heat(reference, doc)
    differing = [f for f in doc["formats"] if f.get("disagreements")]
    parts = [
        f"<h1>Export of {escape(Path(doc['settings']['run']).name)}</h1>",
        f"<div class=sub>scored on {doc['images']} {escape(doc['split'])} images &middot; latency: median single "
        f"image on the exporting machine, {doc['settings']['threads']} LiteRT thread(s) &middot; "
        f"{'every file passed' if doc['ok'] else 'not every file passed'} the gate (at most "
        f"{doc['settings']['max_accuracy_drop']} points lost)</div>",
        section("Files", _table(doc)),
    ]
    if differing:
        parts += [section(f"Where {f['format']} disagrees with Keras", _disagreements({**f, "split": doc["split"]}, heat))
                  for f in differing]
    else:
        parts.append(section("Disagreements", "<p>Every exported file gives the Keras model's class on every "
                                              "test image.</p>"))
    path.write_text(page(f"kclassify export: {Path(doc['settings']['run']).name}", parts), encoding="utf-8")
    return path
