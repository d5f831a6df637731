"""Every bad or unusual input file: excluded with a reason, or decoded to the right RGB pixels."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kclassify.data.files import check_image, list_images

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, (20, 24, 3), dtype=np.uint8)


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="JPEG")
    return buf.getvalue()


BAD = {
    "zero.jpg": lambda p: p.write_bytes(b""),
    "text.jpg": lambda p: p.write_text("this is not an image\n"),
    "truncated.jpg": lambda p: p.write_bytes(_jpeg_bytes()[:200]),
    "corrupt.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(RNG.integers(0, 255, 300, dtype=np.uint8))),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_rejected_with_a_reason(tmp_path, name):
    path = tmp_path / name
    BAD[name](path)
    result = check_image(path, tmp_path / "cache")
    assert not result.ok and result.reason


def test_missing_file_is_rejected(tmp_path):
    assert check_image(tmp_path / "gone.png", tmp_path).reason == "missing file"


# name -> (writer, expected RGB from Pillow); TF must decode to the same pixels (JPEG: close).
GOOD = {
    "rgb.png": lambda p: Image.fromarray(RGB).save(p),
    "rgba.png": lambda p: Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 90, np.uint8)])).save(p),
    "gray.png": lambda p: Image.fromarray(RGB[..., 0]).save(p),
    "gray16.png": lambda p: Image.fromarray(RGB[..., 0].astype(np.uint16) * 257).save(p),
    "palette.png": lambda p: Image.fromarray(RGB).convert("P").save(p),
    "palette.gif": lambda p: Image.fromarray(RGB).convert("P").save(p),
    "anim.GIF": lambda p: Image.fromarray(RGB).save(p, save_all=True, append_images=[Image.fromarray(255 - RGB)]),
    "rgb.bmp": lambda p: Image.fromarray(RGB).save(p),
    "palette.bmp": lambda p: Image.fromarray(RGB).convert("P").save(p),
    "rgb.webp": lambda p: Image.fromarray(RGB).save(p, lossless=True),
    "rgb.JPG": lambda p: Image.fromarray(RGB).save(p, format="JPEG", quality=95),
    "cmyk.jpeg": lambda p: Image.fromarray(RGB).convert("CMYK").save(p, format="JPEG", quality=95),
    "rgb.tif": lambda p: Image.fromarray(RGB).save(p),
}


def _pillow_rgb(path: Path) -> np.ndarray:
    im = Image.open(path)
    if im.mode.startswith("I;16"):
        return np.dstack([(np.asarray(im).astype(np.int64) >> 8)] * 3)
    return np.asarray(im.convert("RGB")).astype(np.int64)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_formats_and_modes_decode_to_rgb(tmp_path, name):
    import tensorflow as tf

    from kclassify.data.pipeline import decode_image

    path = tmp_path / name
    GOOD[name](path)
    result = check_image(path, tmp_path / "cache")
    assert result.ok, result.reason
    assert result.decode_path.exists()
    assert (result.decode_path == path) == (name not in ("palette.bmp", "rgb.tif"))  # converted copies
    img = decode_image(tf.constant(str(result.decode_path)), 20).numpy()  # square resize of 20x24
    assert img.shape == (20, 20, 3) and img.dtype == np.uint8
    raw = tf.io.decode_image(tf.io.read_file(str(result.decode_path)), channels=3, expand_animations=False)
    diff = np.abs(raw.numpy().astype(np.int64) - _pillow_rgb(path)).mean()
    assert diff < (3 if "jp" in name.lower() else 0.01), diff


def test_user_files_are_never_touched(tmp_path):
    path = tmp_path / "palette.bmp"
    GOOD["palette.bmp"](path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    result = check_image(path, tmp_path / "cache")
    assert result.decode_path.parent == tmp_path / "cache" / "converted"
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "palette.bmp"]


def test_listing_skips_hidden_and_non_images(tmp_path):
    (tmp_path / "a.PNG").write_bytes(b"x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.png").write_bytes(b"x")
    files, skipped = list_images(tmp_path)
    assert [f.name for f in files] == ["a.PNG"]
    assert skipped == {"hidden": 2, "not_image": 1}
