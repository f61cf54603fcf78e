"""Griffe extension for the docs build: turn the Sphinx roles of reprinvert's docstrings into links.

The docstrings cross-reference with Sphinx roles (``:func:`invert```, ``:class:`~reprinvert.recipes.Recipe```),
which read well in ``help()`` but which mkdocstrings would show as raw text. Once the package is loaded, every
role becomes a Markdown cross-reference, ``[`invert`][reprinvert.invert.invert]``, pointing at the identifier under
which ``docs/api.md`` renders the object (names resolve as Python would: the object's own members, its module,
then the package; a name with one match in the package resolves to it). A role whose object is not on the API
pages (a private helper) becomes plain code. ``tests/test_docs_site.py`` fails on any raw role in the built site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj|const):`(~?)([^`<>]+?)(?:\s*<([^`>]+)>)?`")
_DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)
_API = Path(__file__).resolve().parents[1] / "api.md"


def _canonical(obj: Any) -> str | None:
    try:
        return str(obj.final_target.path) if obj.is_alias else str(obj.path)
    except Exception:  # an alias griffe cannot resolve (a name from torch, say)
        return None


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the package as a link to the rendered object."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "reprinvert":
            return
        rendered = self._rendered(pkg)
        objects = [o for o in self._walk(pkg)]
        by_name: dict[str, set[str]] = {}
        for o in objects:
            path = _canonical(o)
            if path is not None:
                by_name.setdefault(o.name, set()).add(path)
        for o in objects:
            if o.is_alias or o.docstring is None:
                continue
            o.docstring.value = _ROLE.sub(lambda m, o=o: self._link(m, o, pkg, rendered, by_name), o.docstring.value)

    @staticmethod
    def _walk(obj: Any) -> list[Any]:
        found = [obj]
        for member in list(obj.members.values()):
            if member.is_alias:
                found.append(member)
                continue
            found.extend(SphinxRoles._walk(member))
        return found

    @staticmethod
    def _rendered(pkg: griffe.Module) -> dict[str, str]:
        """Canonical path -> the identifier docs/api.md renders it under (members of rendered modules/classes)."""
        out: dict[str, str] = {}

        def add(ident: str, obj: Any, depth: int, named: bool = False) -> None:
            path = _canonical(obj)
            # Attributes (fields, constants) are rendered in tables, not under anchors, unless api.md names them.
            kind = obj.final_target.kind if obj.is_alias and path is not None else obj.kind
            if path is not None and (named or kind is not griffe.Kind.ATTRIBUTE):
                out.setdefault(path, ident)
            if depth and not obj.is_alias and (obj.is_module or obj.is_class):
                for name, member in obj.members.items():
                    if not name.startswith("_") and (not obj.is_module or not member.is_alias or name in obj.exports):
                        add(f"{ident}.{name}", member, depth - 1)

        for ident in _DIRECTIVE.findall(_API.read_text()):
            try:
                obj = pkg[ident.removeprefix("reprinvert.")] if ident != "reprinvert" else pkg
            except (KeyError, ValueError):
                continue
            add(ident, obj, 2, named=True)
        return out

    @staticmethod
    def _link(m: re.Match[str], here: Any, pkg: griffe.Module, rendered: dict[str, str],
              by_name: dict[str, set[str]]) -> str:
        short, target, explicit = m.group(1) == "~", m.group(2).strip(), m.group(3)
        if explicit:  # :func:`text <target>`
            text, target = target, explicit.strip()
        else:
            text = target.rsplit(".", 1)[-1] if short else target
        text = text.removesuffix("()")
        target = target.removesuffix("()")
        scopes = [here, *([here.parent] if here.parent else []), here.module, pkg]
        path = None
        for scope in scopes:
            try:
                found = pkg if target == "reprinvert" else (
                    pkg[target.removeprefix("reprinvert.")] if target.startswith("reprinvert.") else scope[target]
                )
            except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError):
                continue
            if found.is_module and m.group(0)[1:4] not in ("mod", "py:") and found.name in found.members:
                found = found.members[found.name]  # reprinvert.invert: the function, not its module
            path = _canonical(found)
            if path is not None:
                break
        if path is None and len(by_name.get(target.rsplit(".", 1)[-1], ())) == 1:
            path = next(iter(by_name[target.rsplit(".", 1)[-1]]))
        ident = rendered.get(path or "")
        return f"[`{text}`][{ident}]" if ident else f"`{text}`"
