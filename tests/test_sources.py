"""Each kind of data source, and each data-level error, before any TensorFlow work."""

import shutil

import pytest
from PIL import Image

from conftest import make_image, write_class_folder
from kclassify.data import prepare_data, resolve_source
from kclassify.errors import DataError


def test_class_folder(image_folder):
    (image_folder / "README.txt").write_text("not an image")
    (image_folder / "cat" / ".DS_Store").write_bytes(b"x")
    src = resolve_source(str(image_folder))
    assert src.kind == "folder" and src.classes == ["cat", "dog", "fox"]
    assert len(src.items) == 36 and all(i.split is None for i in src.items)
    assert src.skipped["outside_class_folders"] == 1 and src.skipped["hidden"] == 1


def test_presplit_folder(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        write_class_folder(tmp_path / split, per_class=n, start=0 if split == "train" else 100 + n)
    data = prepare_data(str(tmp_path))
    assert data.source.kind == "split_folder"
    counts = data.counts()
    assert counts["train"] == {"cat": 6, "dog": 6, "fox": 6}
    assert counts["val"] == {"cat": 2, "dog": 2, "fox": 2} and counts["test"]["dog"] == 2


def test_presplit_without_val_takes_val_from_train(tmp_path):
    write_class_folder(tmp_path / "train", per_class=30)
    write_class_folder(tmp_path / "test", per_class=3, start=100)
    counts = prepare_data(str(tmp_path), val_fraction=0.2).counts()
    assert sum(counts["val"].values()) > 0 and sum(counts["test"].values()) == 9


def test_csv_manifest(tmp_path):
    root = write_class_folder(tmp_path / "imgs", per_class=4)
    lines = ["path,label"] + [f"imgs/{c}/img_{i:03d}.png,{c.upper()}" for c in ("cat", "dog") for i in range(4)]
    lines.append("imgs/fox/notes.txt,FOX")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    src = resolve_source(str(tmp_path / "labels.csv"))
    assert src.kind == "csv" and src.classes == ["CAT", "DOG"] and len(src.items) == 8
    assert src.items[0].path == "imgs/cat/img_000.png" and src.skipped == {"not_image": 1}
    assert root.exists()


def test_csv_with_split_column_and_no_header(tmp_path):
    write_class_folder(tmp_path, classes=("a", "b"), per_class=2)
    (tmp_path / "m.csv").write_text("a/img_000.png,a,train\na/img_001.png,a,test\nb/img_000.png,b,train\n")
    src = resolve_source(str(tmp_path / "m.csv"))
    assert [i.split for i in src.items] == [None, None, None]  # no header: third column is not read
    (tmp_path / "m.csv").write_text("path,label,split\na/img_000.png,a,train\na/img_001.png,a,test\nb/img_000.png,b,valid\n")
    assert [i.split for i in resolve_source(str(tmp_path / "m.csv")).items] == ["train", "test", "val"]


def test_builtin_digits_written_once_as_png_files():
    data = prepare_data("builtin:digits")
    assert data.source.kind == "builtin" and data.classes == [str(d) for d in range(10)]
    assert len(data.records) == 1797 and data.records[0].decode_path.endswith(".png")
    with Image.open(data.records[0].decode_path) as im:
        assert im.size == (8, 8)
    assert resolve_source("builtin:digits").root == data.source.root  # cached, not rewritten


def test_tfds_via_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        data = prepare_data("tfds:tf_flowers", min_images=1)  # mock labels are random
    assert data.source.kind == "tfds" and len(data.records) == 40
    assert len(data.classes) >= 2 and all(r.decode_path.endswith(".png") for r in data.records)


def test_tfds_download_failure_is_one_clear_line(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(self, *a, **k):
        raise ConnectionError("Failed to resolve host")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(DataError, match="Could not download or prepare TFDS dataset 'beans'.*local image folder"):
        resolve_source("tfds:beans")


@pytest.mark.parametrize("case,match", [
    ("missing", "does not exist"),
    ("one_class", "at least 2 classes"),
    ("empty_class", "has no images"),
    ("not_csv", "not a .csv manifest"),
    ("no_classes", "at least 2 classes; found no labelled images"),
])
def test_data_errors_before_tensorflow(tmp_path, case, match):
    root = tmp_path / "data"
    if case == "one_class":
        write_class_folder(root, classes=("only",))
    elif case == "empty_class":
        write_class_folder(root, classes=("a", "b"))
        (root / "c").mkdir()
    elif case == "not_csv":
        root = tmp_path / "x.txt"
        root.write_text("x")
    elif case == "no_classes":
        root.mkdir()
    with pytest.raises(DataError, match=match):
        resolve_source(str(root))


def test_bad_files_are_excluded_and_listed(image_folder):
    (image_folder / "cat" / "zero.jpg").write_bytes(b"")
    (image_folder / "dog" / "text.jpg").write_text("hello")
    Image.fromarray(make_image(0)).convert("RGBA").save(image_folder / "cat" / "rgba.png")
    Image.fromarray(make_image(1)[..., 0]).save(image_folder / "dog" / "gray.png")
    data = prepare_data(str(image_folder))
    assert sorted(p for p, _ in data.excluded) == ["cat/zero.jpg", "dog/text.jpg"]
    assert len(data.records) == 38


def test_too_few_images_left_is_an_error(tmp_path):
    root = write_class_folder(tmp_path / "d", classes=("a", "b"), per_class=3)
    for f in (root / "b").iterdir():
        f.write_bytes(b"")
    with pytest.raises(DataError, match=r"class\(es\) \{'b': 0\} have fewer than 2"):
        prepare_data(str(root))
    shutil.rmtree(root / "b")


def test_fingerprint_is_stable_for_the_same_files_and_changes_with_any_byte(tmp_path):
    import shutil

    from conftest import write_class_folder
    from kclassify.data import prepare_data

    data = write_class_folder(tmp_path / "data", per_class=5, ext=".bmp")  # uncompressed: a byte is a pixel
    first = prepare_data(str(data)).fingerprint()
    assert prepare_data(str(data)).fingerprint() == first
    shutil.copytree(data, tmp_path / "copy")
    assert prepare_data(str(tmp_path / "copy")).fingerprint() == first  # same files elsewhere
    image = tmp_path / "copy" / "dog" / "img_002.bmp"
    raw = bytearray(image.read_bytes())
    raw[-1] ^= 0xFF  # one pixel value; same size, still a valid image
    image.write_bytes(bytes(raw))
    changed = prepare_data(str(tmp_path / "copy"))
    assert not changed.excluded and changed.fingerprint() != first
    assert prepare_data(str(data), seed=7).fingerprint() != first  # another split is other data too


def test_a_class_name_labels_txt_cannot_hold_is_refused(tmp_path):
    """labels.txt is read back stripped: a folder named 'cat ' would come back as 'cat', so it is refused up front."""
    from kclassify.data import prepare_data
    from kclassify.errors import DataError

    data = write_class_folder(tmp_path / "data", classes=("cat ", "dog"), per_class=3)
    with pytest.raises(DataError, match=r"\['cat '\] .* begin or end with a space"):
        prepare_data(str(data), min_images=1)
