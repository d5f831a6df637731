"""The documentation: the MkDocs site builds with --strict, every page is in its nav, the README stays short."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _config() -> dict:
    # mkdocs.yml may come to hold mkdocs' !!python/name or !ENV tags; read it as plain YAML, tags as None.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def _nav_pages(nav) -> set[str]:
    """Every Markdown file the nav names, at any depth (`- page.md`, `- Title: page.md`, sections)."""
    if isinstance(nav, str):
        return {nav} if nav.endswith(".md") else set()
    if isinstance(nav, list):
        return set().union(*(_nav_pages(item) for item in nav)) if nav else set()
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(value) for value in nav.values())) if nav else set()
    return set()


def test_site_builds_strict(tmp_path):
    """A broken link or anchor between pages, a page left out of the nav or a docstring the API page cannot
    read is a warning, and --strict turns it into a failure."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"), "-f", "mkdocs.yml"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_every_page_is_in_the_nav():
    """mkdocs only reports a page missing from the nav as INFO; a page nobody can click to is lost."""
    config = _config()
    excluded = [line.strip().rstrip("/") for line in (config.get("exclude_docs") or "").splitlines() if line.strip()]
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
             if not any(p.relative_to(DOCS).as_posix().startswith(e + "/") for e in excluded)}
    in_nav = _nav_pages(config["nav"])
    assert pages - in_nav == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - in_nav)}"
    assert in_nav - pages == set(), f"nav entries with no page in docs/: {sorted(in_nav - pages)}"


def test_readme_is_short_and_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it to 200 and move the rest into docs/"
    first_block = re.search(r"```[a-z]*\n(.*?)```", readme, re.DOTALL)
    assert first_block is not None, "README.md has no fenced code block"
    before = readme[:first_block.start()].strip().splitlines()
    assert len(before) <= 2, f"the two commands must come first; found before them: {before}"
    commands = [line for line in first_block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, f"the first block holds the two commands; found {commands}"
    install, test = commands
    assert "pip install ." in install and "kclassify fit" in install, install
    assert 'pip install ".[dev]"' in test and "pytest" in test, test


def test_the_readmes_links_into_docs_reach_a_page_and_its_heading():
    """mkdocs checks links between its pages, not the README's (GitHub shows it): a renamed section or page
    would leave a newcomer's first click dead."""
    markdown_toc = pytest.importorskip("markdown.extensions.toc")
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 5, links  # the pattern still finds them
    for page, anchor in links:
        path = ROOT / page
        assert path.exists(), f"README.md links to {page}, which does not exist"
        if anchor:
            text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # a '# comment' in code is no heading
            slugs = {markdown_toc.slugify(h, "-") for h in re.findall(r"^#{1,6} +(.+?)\s*$", text, re.MULTILINE)}
            assert anchor in slugs, f"README.md links to {page}#{anchor}: no such heading there"
