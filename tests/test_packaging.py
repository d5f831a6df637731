"""The wheel carries every package and the shipped search spaces."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_every_package_and_the_search_spaces_are_listed_for_the_wheel():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kclassify").rglob("__init__.py")}
    assert on_disk <= set(setuptools["packages"]), f"add {sorted(on_disk - set(setuptools['packages']))} to pyproject"
    assert setuptools["package-dir"]["kclassify.search_spaces"] == "search_spaces"
    assert "*.yaml" in setuptools["package-data"]["kclassify.search_spaces"]
    assert sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml")) == ["default.yaml", "mobile.yaml",
                                                                           "scratch.yaml", "transfer.yaml"]
