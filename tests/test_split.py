"""The split manifest: seeded, stratified, stable when files are added, reusable exactly."""

from collections import Counter

import pytest

from conftest import write_class_folder
from kclassify.data import prepare_data, read_split, write_split
from kclassify.data.sources import Item
from kclassify.data.split import assign_splits
from kclassify.errors import DataError


def _items(n_per_class=500, classes=("a", "b", "c")):
    return [Item(f"{c}/{i}.png", c) for c in classes for i in range(n_per_class)]


def test_fractions_hold_per_class():
    items = assign_splits(_items(), 0.1, 0.1, seed=1)
    for c in "abc":
        counts = Counter(i.split for i in items if i.label == c)
        assert 0.06 < counts["val"] / 500 < 0.14 and 0.06 < counts["test"] / 500 < 0.14


def test_seed_changes_the_split_and_is_reproducible():
    a = assign_splits(_items(), 0.1, 0.1, seed=1)
    assert a == assign_splits(_items(), 0.1, 0.1, seed=1)
    assert a != assign_splits(_items(), 0.1, 0.1, seed=2)


def test_adding_files_never_moves_existing_ones(tmp_path):
    root = write_class_folder(tmp_path / "d", per_class=20)
    before = {r.path: r.split for r in prepare_data(str(root)).records}
    write_class_folder(root, per_class=15, start=20)
    (root / "newclass").mkdir()
    write_class_folder(root, classes=("newclass",), per_class=5)
    after = {r.path: r.split for r in prepare_data(str(root)).records}
    assert len(after) == len(before) + 50
    assert all(after[p] == s for p, s in before.items())


def test_split_file_is_reused_exactly(tmp_path):
    root = write_class_folder(tmp_path / "d", per_class=20)
    first = prepare_data(str(root), seed=1)
    manifest = tmp_path / "split.csv"
    write_split(manifest, first.items())
    write_class_folder(root, per_class=5, start=20)  # new files: not in the manifest
    again = prepare_data(str(root), seed=999, split_file=manifest)
    assert {(r.path, r.split) for r in again.records} == {(r.path, r.split) for r in first.records}
    assert again.unlisted == 15
    assert read_split(manifest)["cat/img_000.png"][0] == "cat"


def test_split_file_errors(tmp_path):
    root = write_class_folder(tmp_path / "d", per_class=4)
    manifest = tmp_path / "split.csv"
    write_split(manifest, prepare_data(str(root)).items())
    (root / "cat" / "img_000.png").unlink()
    with pytest.raises(DataError, match="not in the data"):
        prepare_data(str(root), split_file=manifest)
    (tmp_path / "bad.csv").write_text("file,class\n")
    with pytest.raises(DataError, match="expected the header path,label,split"):
        read_split(tmp_path / "bad.csv")
