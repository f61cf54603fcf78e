"""The package's imports flow one way: layers -> capture -> search -> metrics -> invert/sweep -> experiments ->
report -> cli (``docs/concepts.md``, "How the code is laid out"). Read from the source, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import reprinvert

PACKAGE = Path(reprinvert.__file__).parent

# Each module's place in the flow; a module may import only modules of a lower level. Level 0-2 are leaves
# (values, helpers, models, data) that know nothing of models' layers or of inversions.
LEVEL = {
    "_version": 0, "errors": 0, "_rng": 0, "_tensors": 0, "_filters": 0, "_archive": 0, "_progress": 0,
    "_modelspec": 0,
    "_domain": 1, "_state": 1, "regularizers": 1, "parametrizations": 1, "corruptions": 1, "data": 1, "models": 1,
    "recipes": 2, "train": 2,
    "layers": 3,
    "capture": 4,
    "_search": 5,
    "metrics": 6, "spectrum": 6,
    "invert": 7,
    "_batched": 8,
    "sweep": 9,
    "experiments": 10,
    "report": 11,
    "_demo": 12,
    "cli": 13,
    "__main__": 14,
}


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


def test_every_module_has_a_place_in_the_flow() -> None:
    units = {_unit(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert units <= set(LEVEL), f"modules without a level: {sorted(units - set(LEVEL))}"


def test_imports_flow_one_way() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        if unit == "__init__":
            continue
        for target in _imports(path):
            if target not in LEVEL:
                continue
            if LEVEL[target] >= LEVEL[unit]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target} (level {LEVEL[target]} >= {LEVEL[unit]})")
    assert not wrong, "\n".join(wrong)


def test_layers_and_capture_do_not_import_each_other() -> None:
    assert "capture" not in _imports(PACKAGE / "layers.py")
    assert "layers" in _imports(PACKAGE / "capture.py")
    search = _imports(PACKAGE / "_search.py")
    assert not search & {"invert", "sweep", "metrics", "capture", "_batched"}, search
