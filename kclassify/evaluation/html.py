"""``report.html``: one self-contained page (plots and thumbnails embedded as data URIs, inline CSS,
no script, no external asset) built from ``report.json`` and the evaluated images.
"""

from __future__ import annotations

from pathlib import Path

from ..htmlpage import data_uri as _data_uri
from ..htmlpage import escape as _e
from ..htmlpage import num as _num
from ..htmlpage import page
from ..htmlpage import section as _section
from ..htmlpage import gallery, tile

def write_report_html(path: Path, report: dict, plots: dict[str, Path], mistakes: list[dict],
                      suspects: list[dict], image_paths: dict[str, str], heat: dict | None = None) -> Path:
    """Write the page.

    Args:
        report: the content of report.json.
        plots: plot name -> PNG file.
        mistakes: the worst misclassifications, rows with path, true, predicted, confidence.
        suspects: the first rows of suspect_labels.csv.
        image_paths: a row's ``path`` -> the file to make its thumbnail from.
        heat: (path, class) -> a PNG data URI of the Grad-CAM heat of that class over the image, drawn beside
            its thumbnail (a Keras model's report; empty for files without gradients).
    """
    m = report["metrics"]
    parts = [
        f"<h1>Evaluation of {_e(report['model']['name'])}</h1>",
        f"<div class=sub>{_e(report['model']['kind'])} model, {report['model']['image_size']} px "
        f"(photos resized: {_e(report['model'].get('resize', 'kclassify'))}), "
        f"{len(report['model']['labels'])} classes &middot; split <b>{_e(report['data']['split'])}</b> of "
        f"{_e(report['data']['source'])}: {m['images']} images &middot; {_e(report['created'])}</div>",
        _tta_line(report.get("tta")),
        _cards(report),
        _calibration_note(report.get("calibration")),
        _section("Plots", _plots(plots)),
        _section("Per class", _per_class_table(m)),
        _section("Most confused pairs", _confused_table(m["most_confused"])),
        _section(f"Worst misclassified images ({len(mistakes)} most confident mistakes)",
                 _gallery(mistakes, image_paths, "predicted", "confidence", heat or {}) if mistakes
                 else "<p>No misclassified image.</p>"),
        _section("Suspect labels", _suspects_intro(report["suspects"]) + _gallery(suspects, image_paths, "suggested", "", heat or {})),
    ]
    path.write_text(page(f"kclassify evaluation: {report['model']['name']}", parts), encoding="utf-8")
    return path


def _calibration_note(cal: dict | None) -> str:
    if not cal or cal.get("fitted_on") or not cal.get("not_fitted"):
        return ""
    return f"<p class=sub>Temperature kept at 1: {_e(cal['not_fitted'])}.</p>"


def _tta_line(tta: dict | None) -> str:
    if not tta:
        return ""
    plain = tta["plain"]["accuracy"]
    return (f"<p>Test-time augmentation <b>{_e(tta['policy'])}</b>: the mean probabilities of {tta['views']} views "
            f"({_e(tta['description'])}). Without it, on the same images: accuracy {_num(plain)}, macro F1 "
            f"{_num(tta['plain']['macro_f1'])}.</p>")


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


def _gallery(rows: list[dict], image_paths: dict[str, str], other: str, confidence_key: str, heat: dict) -> str:
    tiles = []
    for r in rows:
        if other == "predicted":
            caption = (f"<span class=good>true: {_e(r['true'])}</span><br><span class=bad>predicted: "
                       f"{_e(r['predicted'])} ({r['confidence']:.1%})</span>")
        else:
            caption = (f"<span class=bad>given: {_e(r['given_label'])} ({r['given_probability']:.1%})</span><br>"
                       f"<span class=good>likely: {_e(r['suggested_label'])} ({r['suggested_probability']:.1%})</span>")
        classes = (r["true"], r["predicted"]) if other == "predicted" else (r["given_label"], r["suggested_label"])
        beside = [(heat[r["path"], c], f"looks for {c}") for c in classes if (r["path"], c) in heat]
        tiles.append(tile(image_paths.get(r["path"], r["path"]), caption, r["path"], beside))
    return gallery(tiles)
