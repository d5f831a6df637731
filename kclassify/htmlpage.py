"""Pieces of kclassify's self-contained HTML reports (evaluation, audit): one stylesheet, images as
data URIs, thumbnails, escaping. No TensorFlow, no network: a report is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io

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
.tile.wide{width:380px}.heats{display:flex;gap:5px}.heats figure{margin:0}.heats figcaption{color:#5b6b7c}
.group{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:8px;margin:10px 0}
"""


def page(title: str, body: list[str]) -> str:
    """A whole document: title, the shared stylesheet, the body parts."""
    return "\n".join([f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
                      f"<style>{CSS}</style></head><body>", *body, "</body></html>"])


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def thumbnail(path: str, size: int = THUMB) -> str:
    """An ``<img>`` of the file shrunk to ``size`` (as a person sees it: EXIF orientation applied)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if im.width * im.height > 60_000_000:
                return "<img alt='too large to show'>"
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale, much faster
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return "<img alt='unreadable'>"
    return f"<img alt='thumbnail' src='{data_uri(buf.getvalue(), 'image/jpeg')}'>"


def tile(image: str | None, caption: str, path: str, beside: list[tuple[str, str]] = ()) -> str:
    """One gallery tile: ``image``'s thumbnail (none when None), ``caption`` (HTML), then ``path`` in small print.

    ``beside``: (PNG data URI, caption) pictures shown next to the thumbnail (a wider tile), e.g. heat maps.
    """
    picture = thumbnail(image) if image is not None else ""
    if beside:
        figures = "".join(f"<figure><img alt='{escape(text)}' src='{uri}'><figcaption>{escape(text)}</figcaption>"
                          "</figure>" for uri, text in beside)
        return (f"<div class='tile wide'><div class=heats><figure>{picture}</figure>{figures}</div>{caption}<br>"
                f"<span class=sub>{escape(path)}</span></div>")
    return f"<div class=tile>{picture}{caption}<br><span class=sub>{escape(path)}</span></div>"


def gallery(tiles) -> str:
    """Tiles (:func:`tile`) side by side, wrapping."""
    return f"<div class=gallery>{''.join(tiles)}</div>"


def section(title: str, body: str) -> str:
    anchor = title.split(" (")[0].lower().replace(" ", "-")
    return f"<h2 id={anchor}>{escape(title)}</h2>{body}"


def num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def escape(text) -> str:
    return html.escape(str(text), quote=True)
