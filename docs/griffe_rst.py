"""A griffe extension for the API reference: gptlab's reST-flavoured docstrings, read as Markdown.

gptlab's docstrings use Sphinx roles (``:func:`prepare```, ``:mod:`~gptlab.data.corpus```) and
reST literal blocks (``layout::`` followed by an indented block). Markdown shows a role as
literal text, so before mkdocstrings renders a docstring this extension rewrites

- each role whose target it can find in the loaded package, and that the API reference renders
  (a public name with a docstring), as a mkdocstrings cross-reference: ``[`prepare`][gptlab.data.shards.prepare]``;
  names are looked up as Sphinx does, from the innermost scope outwards, then as absolute paths;
- any other role as plain code (``prepare``), so a reference the site cannot link never breaks
  ``mkdocs build --strict``;
- a paragraph ending in ``::`` as one ending in ``:`` (the indented block after it is already a
  Markdown code block).

The source files are not touched; mkdocs.yml loads this file (``extensions:`` of the python handler).
Set ``GPTLAB_DOCS_ROLES=report`` to list on stderr the roles that stay plain code.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(mod|func|class|meth|attr|data|exc|obj|const):`(~?)([\w.]+)(?:\(\))?`")
LITERAL_BLOCK = re.compile(r"(?<=\S)::$", re.MULTILINE)


class ReSTRoles(griffe.Extension):
    """Rewrite Sphinx roles and ``::`` literal-block markers once the whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self.collection = loader.modules_collection
        self.plain: list[str] = []
        for obj in walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self.rewrite(obj, obj.docstring.value)
        if os.environ.get("GPTLAB_DOCS_ROLES") == "report":
            for line in self.plain:
                print(f"griffe_rst: left as code: {line}", file=sys.stderr)

    def rewrite(self, obj: griffe.Object, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            short, name = match.group(2) == "~", match.group(3)
            shown = f"`{name.rsplit('.', 1)[-1] if short else name}`"
            target = self.resolve(obj, name)
            if target is None:
                self.plain.append(f"{obj.path}: {match.group(0)}")
                return shown
            return f"[{shown}][{target}]"

        return LITERAL_BLOCK.sub(":", ROLE.sub(replace, text))

    def resolve(self, obj: griffe.Object, name: str) -> str | None:
        """The canonical path of ``name`` as seen from ``obj``, if the reference renders it."""
        scopes: list[griffe.Object] = []
        scope: griffe.Object | None = obj if (obj.is_module or obj.is_class) else obj.parent
        while scope is not None:
            scopes.append(scope)
            scope = scope.parent
        for candidate in [f"{s.path}.{name}" for s in scopes] + [name]:
            found = self.lookup(candidate)
            if found is not None:
                return found
        return None

    def lookup(self, path: str) -> str | None:
        try:
            found = self.collection[path]
            if found.is_alias:
                found = found.final_target
        except Exception:  # noqa: BLE001 - not found, or an alias that leads outside the package
            return None
        parts = found.path.split(".")
        if parts[0] != "gptlab" or any(part.startswith("_") for part in parts):
            return None  # outside the package, or filtered out of the reference
        if not (found.is_module or found.has_docstrings):
            return None  # mkdocstrings leaves undocumented members out
        return found.path


def walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from walk(member)
