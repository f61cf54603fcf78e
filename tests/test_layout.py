"""The shape of the package: imports flow one way (values -> model access -> search -> results -> runners -> faces,
``docs/concepts.md``, "How the code is laid out"), one concept a file, and the limits that keep each file readable.
Read from the source, lazy imports included."""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

import reprinvert

PACKAGE = Path(reprinvert.__file__).parent

# Each module's place in the flow; a module may import only modules of a lower level.
LEVEL = {
    # values and leaves: know nothing of models' layers or of inversions
    "_version": 0, "errors": 0, "_rng": 0, "_tensors": 0, "_filters": 0, "_archive": 0, "_progress": 0,
    "_modelspec": 0, "_moved": 0,
    "_checks": 1, "_checkpoint": 1, "_verdict": 1, "_domain": 1, "_state": 1, "regularizers": 1, "parametrizations": 1,
    "corruptions": 1, "data": 1, "models": 1,
    "recipes": 2, "train": 2,
    # reaching into a model; the search (which knows no model)
    "_layers": 3, "_outputs": 3, "_search": 3,
    "_feed": 4,
    "_hooks": 5,
    "_capture": 6, "_describe": 6, "_plan": 6,
    "metrics": 7, "_spectrum": 7, "_tokens": 7, "_layer_choice": 7, "_token_space": 7,
    # results
    "_inversion": 8,
    "_sweep_result": 9, "_invert": 9, "_token_inversion": 9,
    "_persist": 10, "_batched": 10, "_token_search": 10,
    # runners
    "_sweep": 11,
    "study": 12, "experiments": 12,
    # faces
    "report": 13,
    "_demo": 14,
    "cli": 15,
    "__main__": 16,
}

# The limits of one file's contents (the design issue's bar).
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 100
MAX_PRIVATE_PARAMETERS = 10


def _unit(path: Path) -> str:
    """The flow unit of a file: its top-level module or sub-package name."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """Units of reprinvert imported by ``path`` anywhere in it (module level or inside functions)."""
    unit = _unit(path)
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for a top-level module, 1 inside a sub-package
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "reprinvert" and len(parts) > 1:
                    found.add(parts[1])
                continue
            up = node.level - 1  # levels above the file's own package
            if up < depth:  # inside the same sub-package
                continue
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "reprinvert" and len(parts) > 1:
                    found.add(parts[1])
    found.discard(unit)
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_place_in_the_flow() -> None:
    units = {_unit(p) for p in _sources()} - {"__init__"}
    assert units <= set(LEVEL), f"modules without a level: {sorted(units - set(LEVEL))}"
    assert set(LEVEL) <= units, f"levels of modules that do not exist: {sorted(set(LEVEL) - units)}"


def test_imports_flow_one_way() -> None:
    wrong = []
    for path in _sources():
        unit = _unit(path)
        if unit == "__init__":
            continue
        for target in _imports(path):
            if target in LEVEL and LEVEL[target] >= LEVEL[unit]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target} (level {LEVEL[target]} >= {LEVEL[unit]})")
    assert not wrong, "\n".join(wrong)


def test_the_search_knows_no_model() -> None:
    """The search package imports no model access, result or runner: it differentiates the forward it is given."""
    search = set().union(*(_imports(p) for p in (PACKAGE / "_search").glob("*.py")))
    assert not search & {"_feed", "_hooks", "_layers", "_capture", "metrics", "_invert", "_sweep", "_batched"}, search


def test_forward_hooks_are_registered_in_one_module() -> None:
    registering = {
        str(p.relative_to(PACKAGE)) for p in _sources()
        if "register_forward_hook" in p.read_text() or "register_forward_pre_hook" in p.read_text()
    }
    assert registering == {"_hooks.py"}, registering


def test_no_file_is_over_the_line_limit() -> None:
    lines = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in _sources()}
    long = {name: n for name, n in lines.items() if n > MAX_FILE_LINES}
    assert not long, long


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("reprinvert", *(parts[:-1] if parts[-1] == "__init__" else parts)))


@functools.cache
def _exported() -> dict[str, set[str]]:
    """For each module, its functions that a public namespace (``reprinvert`` or a public subpackage) re-exports:
    public API whose signature is not ours to shorten."""
    out: dict[str, set[str]] = {}
    public = [reprinvert] + [importlib.import_module(f"reprinvert.{n}") for n in ("report", "experiments", "data")]
    for namespace in public:
        for name in getattr(namespace, "__all__", ()):
            obj = getattr(namespace, name, None)
            if callable(obj) and hasattr(obj, "__module__"):
                out.setdefault(obj.__module__, set()).add(name)
    return out


def test_no_function_is_over_the_line_limit_and_no_private_one_takes_too_many_parameters() -> None:
    long, wide = [], []
    for path in _sources():
        private_module = path.relative_to(PACKAGE).name.startswith("_") or any(
            part.startswith("_") for part in path.relative_to(PACKAGE).parts[:-1]
        )
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            where = f"{path.relative_to(PACKAGE)}:{node.name}"
            assert node.end_lineno is not None
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(f"{where} ({node.end_lineno - node.lineno + 1} lines)")
            a = node.args
            count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
            exported = node.name in _exported().get(_module_name(path), set())  # public API: signature kept
            if (private_module or node.name.startswith("_")) and not exported and count > MAX_PRIVATE_PARAMETERS:
                wide.append(f"{where} ({count} parameters)")
    assert not long, long
    assert not wide, wide
