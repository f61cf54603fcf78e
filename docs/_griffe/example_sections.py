"""Griffe extension for the docs build: read Google-style ``Example:`` sections as ``Examples:``.

reprinvert's docstrings title their runnable snippets ``Example:`` (singular). Griffe's Google parser only
recognises ``Examples:`` as a code-example section and would render the singular as a Markdown admonition, where
doctest output such as ``[('a', 1)]`` is read as a link reference.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section titles to ``Examples:`` before the docstring is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
