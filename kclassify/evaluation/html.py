"""``report.html``: one self-contained page (plots and thumbnails embedded as data URIs, inline CSS,
no script, no external asset) built from ``report.json`` and the evaluated images.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

THUMB = 112  # pixels, the longer side of a gallery thumbnail

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1d2733;
padding:0 16px;background:#fafbfc}
h1{font-size:1.5em;margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.sub{color:#5b6b7c;font-size:.9em}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:1.6em}.card span{color:#5b6b7c;font-size:.85em}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plots figure{margin:0;background:#fff;border:1px solid #dde3ea;
border-radius:8px;padding:8px}.plots img{max-width:540px;width:100%}.plots figure.wide img{max-width:1100px}
table{border-collapse:collapse;background:#fff;font-size:.9em}th,td{border:1px solid #dde3ea;padding:4px 10px;
text-align:right}th{background:#eef2f6}td:first-child,th:first-child{text-align:left}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.tile{background:#fff;border:1px solid #dde3ea;border-radius:6px;
padding:6px;width:130px;font-size:.78em;overflow-wrap:anywhere}.tile img{width:120px;height:120px;object-fit:contain;
background:#eee;display:block;margin-bottom:4px}.bad{color:#b42318}.good{color:#067647}
"""


def write_report_html(path: Path, report: dict, plots: dict[str, Path], mistakes: list[dict],
                      suspects: list[dict], image_paths: dict[str, str]) -> Path:
    """Write the page.

    Args:
        report: the content of report.json.
        plots: plot name -> PNG file.
        mistakes: the worst misclassifications, rows with path, true, predicted, confidence.
        suspects: the first rows of suspect_labels.csv.
        image_paths: a row's ``path`` -> the file to make its thumbnail from.
    """
    m = report["metrics"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>kclassify evaluation: {_e(report['model']['name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Evaluation of {_e(report['model']['name'])}</h1>",
        f"<div class=sub>{_e(report['model']['kind'])} model, {report['model']['image_size']} px, "
        f"{len(report['model']['labels'])} classes &middot; split <b>{_e(report['data']['split'])}</b> of "
        f"{_e(report['data']['source'])}: {m['images']} images &middot; {_e(report['created'])}</div>",
        _cards(report),
        _section("Plots", _plots(plots)),
        _section("Per class", _per_class_table(m)),
        _section("Most confused pairs", _confused_table(m["most_confused"])),
        _section(f"Worst misclassified images ({len(mistakes)} most confident mistakes)",
                 _gallery(mistakes, image_paths, "predicted", "confidence") if mistakes
                 else "<p>No misclassified image.</p>"),
        _section("Suspect labels", _suspects_intro(report["suspects"]) + _gallery(suspects, image_paths, "suggested", "")),
        "</body></html>",
    ]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _cards(report: dict) -> str:
    m, cal = report["metrics"], report["calibration"]
    cards = [("accuracy", m["accuracy"]), ("balanced accuracy", m["balanced_accuracy"]),
             ("macro F1", m["macro"]["f1"]), ("ROC AUC (macro)", m["roc_auc"]["macro"]),
             ("log loss", m["log_loss"]), ("Cohen's kappa", m["cohen_kappa"])]
    if m["top_k_accuracy"]:
        cards.insert(1, (f"top-{m['top_k_accuracy']['k']} accuracy", m["top_k_accuracy"]["value"]))
    if cal:
        cards.append(("ECE", cal["ece"]))
        if cal["fitted_on"]:
            cards.append((f"ECE at T={cal['temperature']:.2f}", cal["ece_calibrated"]))
    if report.get("threshold"):
        cards.append((f"best-F1 threshold ({report['threshold']['fitted_on']})", report["threshold"]["threshold"]))
    body = "".join(f"<div class=card><b>{_num(v)}</b><span>{_e(k)}</span></div>" for k, v in cards)
    return f"<div class=cards id=headline>{body}</div>"


def _plots(plots: dict[str, Path]) -> str:
    figures = [f"<figure{' class=wide' if name == 'training_curves' else ''}><img alt='{_e(name)}' src='{_data_uri(p.read_bytes(), 'image/png')}'>"
               f"<figcaption>{_e(name.replace('_', ' '))}</figcaption></figure>" for name, p in plots.items()]
    return f"<div class=plots>{''.join(figures)}</div>"


def _per_class_table(m: dict) -> str:
    head = "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th><th>ROC AUC</th><th>AP</th></tr>"
    rows = "".join(  # a class with no image in the split has no recall: n/a, not a zero that looks like failure
        f"<tr><td>{_e(r['label'])}</td><td>{_num(r['precision'])}</td>"
        f"<td>{_num(r['recall'] if r['support'] else None)}</td><td>{_num(r['f1'] if r['support'] else None)}</td>"
        f"<td>{r['support']}</td><td>{_num(r['roc_auc'])}</td><td>{_num(r['average_precision'])}</td></tr>"
        for r in m["per_class"])
    foot = "".join(
        f"<tr><th>{name}</th><th>{_num(m[key]['precision'])}</th><th>{_num(m[key]['recall'])}</th>"
        f"<th>{_num(m[key]['f1'])}</th><th>{m['images']}</th><th></th><th></th></tr>"
        for key, name in (("macro", "macro avg"), ("weighted", "weighted avg")))
    return f"<table id=per-class>{head}{rows}{foot}</table>"


def _confused_table(pairs: list[dict]) -> str:
    if not pairs:
        return "<p>No confusion: every image was classified correctly.</p>"
    rows = "".join(f"<tr><td>{_e(r['true'])}</td><td>{_e(r['predicted'])}</td><td>{r['count']}</td>"
                   f"<td>{r['share_of_true']:.1%}</td></tr>" for r in pairs)
    return ("<table id=confused><tr><th>true</th><th>predicted as</th><th>images</th><th>share of the true class</th>"
            f"</tr>{rows}</table>")


def _suspects_intro(suspects: dict) -> str:
    if not suspects["count"]:
        return f"<p>No suspect label among {suspects['images']} out-of-sample images ({_e(suspects['source'])}).</p>"
    return (f"<p>{suspects['count']} of {suspects['images']} images ({_e(suspects['source'])}) are probably "
            f"mislabelled: the model gives their label a low probability while another class is confident "
            f"({_e(suspects['method'])}). All are listed in <code>suspect_labels.csv</code>, most suspect first; "
            f"the first {min(suspects['count'], suspects['shown'])} are shown.</p>")


def _gallery(rows: list[dict], image_paths: dict[str, str], other: str, confidence_key: str) -> str:
    tiles = []
    for r in rows:
        if other == "predicted":
            caption = (f"<span class=good>true: {_e(r['true'])}</span><br><span class=bad>predicted: "
                       f"{_e(r['predicted'])} ({r['confidence']:.1%})</span>")
        else:
            caption = (f"<span class=bad>given: {_e(r['given_label'])} ({r['given_probability']:.1%})</span><br>"
                       f"<span class=good>likely: {_e(r['suggested_label'])} ({r['suggested_probability']:.1%})</span>")
        tiles.append(f"<div class=tile>{_thumbnail(image_paths.get(r['path'], r['path']))}{caption}<br>"
                     f"<span class=sub>{_e(r['path'])}</span></div>")
    return f"<div class=gallery>{''.join(tiles)}</div>"


def _thumbnail(path: str) -> str:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
    except (OSError, ValueError, Image.DecompressionBombError):
        return "<img alt='unreadable'>"
    return f"<img alt='thumbnail' src='{_data_uri(buf.getvalue(), 'image/jpeg')}'>"


def _section(title: str, body: str) -> str:
    anchor = title.split(" (")[0].lower().replace(" ", "-")
    return f"<h2 id={anchor}>{_e(title)}</h2>{body}"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _e(text) -> str:
    return html.escape(str(text), quote=True)
