"""audit: one generated instance of every problem is found, nothing clean is flagged, no file changes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import bomb_png

from kclassify.data.audit import AuditSettings, audit
from kclassify.data.duplicates import groups, hamming_pairs

SIZE = 64


def pattern(seed: int, size: int = SIZE, grid: int = 4):
    """A smooth random picture: distinct low frequencies, so perceptual hashes of two seeds differ."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((grid, grid, 3)) * 255).astype(np.uint8))
    return small.resize((size, size), Image.BICUBIC)


def save(image, path: Path, fmt: str | None = None, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kw)


# check name -> the file(s) it must list
EXPECTED = {
    "unreadable": {"cat/truncated.jpg", "cat/empty.jpg", "dog/notes.jpg"},
    "cmyk": {"cat/cmyk.jpg"},
    "sixteen_bit": {"dog/deep.png"},
    "transparency": {"cat/alpha.png"},
    "palette": {"dog/palette.png"},
    "animated": {"cat/anim.gif"},
    "exif_rotated": {"dog/rotated.jpg"},
    "extension_mismatch": {"dog/actually_png.jpg"},
    "tiny": {"cat/tiny.png"},
    "extreme_aspect": {"cat/wide.png"},
    "huge": {"dog/huge.png"},
    "hidden_files": {"cat/.DS_Store"},
    "non_image_files": {"dog/readme.txt"},
}


def problem_folder(root: Path) -> Path:
    """Two classes of clean pictures plus one file for every problem audit looks for."""
    from PIL import Image

    for k in range(8):
        save(pattern(100 + k), root / "cat" / f"clean_{k}.png")
        save(pattern(200 + k), root / "dog" / f"clean_{k}.jpg", quality=95)
    jpeg = root / "cat" / "truncated.jpg"
    save(pattern(1), jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:400])
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "notes.jpg").write_text("not a picture, just text named .jpg")
    save(pattern(2).convert("CMYK"), root / "cat" / "cmyk.jpg")
    save(Image.fromarray((np.asarray(pattern(3).convert("L"), np.uint16) * 257)), root / "dog" / "deep.png")
    rgba = pattern(4).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((SIZE, SIZE)))
    save(rgba, root / "cat" / "alpha.png")
    save(pattern(5).convert("P", palette=Image.ADAPTIVE), root / "dog" / "palette.png")
    frames = [pattern(6).convert("P"), pattern(7).convert("P")]
    frames[0].save(root / "cat" / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    save(pattern(8), root / "dog" / "rotated.jpg", exif=exif.tobytes())
    save(pattern(9), root / "dog" / "actually_png.jpg", "PNG")
    save(pattern(10, 12), root / "cat" / "tiny.png")
    save(pattern(11).resize((400, 50)), root / "cat" / "wide.png")
    (root / "dog" / "huge.png").write_bytes(bomb_png())
    # duplicates: exact within a class, exact across classes, near (resized + re-encoded) within a class
    save(pattern(20), root / "cat" / "dup_a.png")
    shutil.copy(root / "cat" / "dup_a.png", root / "cat" / "dup_b.png")
    save(pattern(21), root / "cat" / "mislabelled.png")
    shutil.copy(root / "cat" / "mislabelled.png", root / "dog" / "mislabelled_copy.png")
    save(pattern(22, 128), root / "dog" / "original.png")
    save(pattern(22, 128).resize((90, 90)), root / "dog" / "resized_copy.jpg", quality=80)
    # A slight crop: 4 px of 128 a side (3%). Smooth synthetic pictures move their hash more under a crop than
    # photos do (a 5% crop of an intel_scenes photo: 4 bits); this one moves 4 bits.
    save(pattern(24, 128, grid=8), root / "cat" / "uncropped.png")
    save(pattern(24, 128, grid=8).crop((4, 4, 124, 124)), root / "cat" / "cropped_copy.jpg", quality=80)
    # a leak across the given split: the same picture as a training and a test image
    save(pattern(23), root / "cat" / "leak_train.png")
    save(pattern(23), root / "cat" / "leak_test.png")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "dog" / "readme.txt").write_text("collected in 2024")
    return root


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    data = problem_folder(root / "data")
    split = root / "split.csv"
    split.write_text("path,label,split\ncat/leak_train.png,cat,train\ncat/leak_test.png,cat,test\n")
    before = digests(data)
    result = audit(str(data), split_file=split, output=root / "report", write_manifest=root / "clean.csv",
                   settings=AuditSettings(min_size=32))
    return data, result, before, root


def test_every_problem_is_found(audited):
    _, result, _, _ = audited
    checks = result.report["checks"]
    for name, expected in EXPECTED.items():
        assert {f["path"] for f in checks[name]["files"]} == expected, name


def test_duplicates_contradictions_and_leaks(audited):
    _, result, _, _ = audited
    found = {frozenset(m["path"] for m in g["members"]): g for g in result.report["duplicates"]["groups"]}
    assert set(found) == {frozenset({"cat/dup_a.png", "cat/dup_b.png"}),
                          frozenset({"cat/mislabelled.png", "dog/mislabelled_copy.png"}),
                          frozenset({"dog/original.png", "dog/resized_copy.jpg"}),
                          frozenset({"cat/uncropped.png", "cat/cropped_copy.jpg"}),
                          frozenset({"cat/leak_train.png", "cat/leak_test.png"})}
    assert found[frozenset({"cat/uncropped.png", "cat/cropped_copy.jpg"})]["kind"] == "near"
    assert found[frozenset({"cat/dup_a.png", "cat/dup_b.png"})]["kind"] == "exact"
    near = found[frozenset({"dog/original.png", "dog/resized_copy.jpg"})]
    assert near["kind"] == "near" and not near["contradictory"]
    assert found[frozenset({"cat/mislabelled.png", "dog/mislabelled_copy.png"})]["contradictory"]
    leak = found[frozenset({"cat/leak_train.png", "cat/leak_test.png"})]
    assert leak["test_in_train"] and leak["splits"] == ["test", "train"]
    d = result.report["duplicates"]
    assert (d["across_classes"]["groups"], d["test_in_train"]["groups"]) == (1, 1)


def test_nothing_clean_is_flagged_and_no_file_changed(audited):
    data, result, before, _ = audited
    flagged = {f["path"] for c in result.report["checks"].values() for f in c["files"]}
    flagged |= {m["path"] for g in result.report["duplicates"]["groups"] for m in g["members"]}
    clean = {f"{c}/clean_{k}.{'png' if c == 'cat' else 'jpg'}" for c in ("cat", "dog") for k in range(8)}
    assert not clean & flagged
    assert digests(data) == before  # read only: not one byte changed, nothing added or removed


def test_balance_and_the_clean_manifest(audited, tmp_path):
    data, result, _, root = audited
    balance = result.report["class_balance"]
    readable = result.report["readable"]
    assert sum(balance["counts"].values()) == readable and balance["imbalance_ratio"] == pytest.approx(
        max(balance["counts"].values()) / min(balance["counts"].values()), abs=1e-3)
    lines = (root / "clean.csv").read_text().splitlines()
    kept = {line.split(",")[0].split("data/")[-1] for line in lines[1:]}
    assert "cat/dup_a.png" in kept and "cat/dup_b.png" not in kept  # one copy kept
    assert not {"cat/mislabelled.png", "dog/mislabelled_copy.png"} & kept  # contradictory: both dropped
    assert not EXPECTED["unreadable"] & kept and "dog/huge.png" not in kept
    assert len(kept) == readable - 4 - 2 == result.report["manifest"]["kept"]  # 4 extra copies, 2 contradictory
    from kclassify.data import prepare_data

    assert len(prepare_data(str(root / "clean.csv")).records) == len(kept)  # fit --data clean.csv reads it all


def test_report_files_and_browser(audited, tmp_path):
    _, result, _, _ = audited
    doc = json.loads((result.folder / "audit.json").read_text())
    assert doc["checks"]["huge"]["count"] == 1 and doc["schema"] == 1
    assert doc["checks"]["huge"]["files"][0]["detail"] == "20000x20000 = 400 megapixels"
    page = (result.folder / "audit.html").read_text()
    assert "http://" not in page and "<script" not in page
    from cdp import FLAGS, chromium_path

    dom = subprocess.run([chromium_path(), *FLAGS, "--dump-dom", (result.folder / "audit.html").resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'id="headline"' in dom and "dog/resized_copy.jpg" in dom
    groups_shown = dom.count('class="group"')
    assert groups_shown == len(doc["duplicates"]["groups"]) == 5


def test_near_duplicate_search_by_blocks():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 500, dtype=np.uint64)
    hashes[7] = hashes[3] ^ np.uint64(0b1011)  # 3 bits apart
    assert hamming_pairs(hashes, 3) == [(3, 7)]
    far = 2**40 + 2**41 + 2**42  # 4 bits from 1, 6 from 7
    assert groups(["a", "b", "a", "c"], [1, far, 7, None], 2) == [[0, 2]]  # same digest (and 1 ^ 7: 2 bits)
    assert groups(["a", "b", "c", "d"], [1, far, 7, None], 2) == [[0, 2]]  # by the hash alone


def test_fit_audit_full_stops_on_a_test_copy_of_a_training_image(tmp_path):
    from conftest import TINY, write_class_folder

    from kclassify import fit
    from kclassify.data.split import unit_hash
    from kclassify.errors import DataError

    data = write_class_folder(tmp_path / "data", per_class=10, size=16)
    name = next(f"copy_{i}.png" for i in range(1000) if unit_hash(TINY["seed"], f"cat/copy_{i}.png") < 0.1)
    shutil.copy(data / "cat" / "img_000.png", data / "cat" / name)  # lands in test; img_000 in train
    assert unit_hash(TINY["seed"], "cat/img_000.png") >= 0.2
    with pytest.raises(DataError, match="test image.*copies of training images"):
        fit(data=str(data), output=tmp_path / "run", verbose=0, audit="full", **TINY)
    assert (tmp_path / "run" / "audit" / "audit.html").is_file()


@pytest.mark.slow
def test_cli_audit(tmp_path, capsys):
    from conftest import write_class_folder

    from kclassify.cli import main

    data = write_class_folder(tmp_path / "data", per_class=6, size=40)
    assert main(["audit", str(data), "--output", str(tmp_path / "a"), "--write-manifest", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "audited 18 files" in out and str(tmp_path / "a" / "audit.html") in out
    assert main(["audit", str(data), "--write-manifest", str(tmp_path / "c.csv")]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    from conftest import TINY

    from kclassify import fit

    run = fit(data=str(tmp_path / "c.csv"), output=tmp_path / "run", verbose=0, **{**TINY, "epochs": 1})
    data_info = json.loads((run.run_dir / "run.json").read_text())["data"]  # fit --data clean.csv trained on it
    assert data_info["kind"] == "csv" and sum(sum(c.values()) for c in data_info["counts"].values()) == 18
    assert (run.run_dir / "model.keras").is_file()


def test_tiny_images_are_compared_by_bytes_only(tmp_path):
    """A perceptual hash of an 8x8 picture measures the upscaling: near-copies of those are not searched."""
    from PIL import Image

    data = tmp_path / "data"
    base = np.zeros((8, 8), np.uint8)
    base[2:6, 3:5] = 200
    other = base.copy()
    other[2, 2] = 120  # a different picture, a near-identical hash
    for label, pixels in (("one", base), ("seven", other)):
        save(Image.fromarray(pixels), data / label / "a.png")
    shutil.copy(data / "one" / "a.png", data / "one" / "b.png")  # an exact copy is still found
    report = audit(str(data), output=tmp_path / "r").report["duplicates"]
    assert [sorted(m["path"] for m in g["members"]) for g in report["groups"]] == [["one/a.png", "one/b.png"]]
    assert report["too_small_for_near"] == 3
