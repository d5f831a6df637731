"""A Griffe extension for the API page: a docstring's ``Example:`` section read as ``Examples:``.

kclassify's docstrings head their doctest with ``Example:``, which Google's style guide and Sphinx's
napoleon accept; Griffe's Google parser knows only ``Examples:`` and renders ``Example:`` as an
admonition of Markdown, where ``>>> x["a"]["b"]`` reads as a reference link. Loaded by mkdocs.yml;
excluded from the site itself.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
