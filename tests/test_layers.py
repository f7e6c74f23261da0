"""The import direction of ARCHITECTURE.md: no module imports one in a layer above its own (lazy imports inside
functions included). The layers are listed here once; ARCHITECTURE.md shows the same table."""

import ast
from pathlib import Path

import atelier

PACKAGE = Path(atelier.__file__).parent

# Module (or package) -> layer. A module not listed takes its package's layer.
LAYERS = {
    "atelier": 0, "errors": 0, "progress": 0, "options": 0, "registry": 0, "files": 0, "devices": 0, "losses": 0,
    "colour": 0, "tiling": 0,
    "images": 1, "folders": 1, "examples": 1,
    "features": 2, "nets": 2,
    "methods": 3, "teachers": 3, "metrics": 3,
    "api": 4, "sheets": 4, "about": 4,
    "train": 5, "export": 5, "runtime": 5, "runtime_magenta": 5, "bench": 5, "video": 5,
    "cli": 6, "cli_io": 6, "cli_train": 6, "cli_video": 6, "flags": 6, "serve": 6, "__main__": 6,
}


def _layer(parts: list[str]) -> int:
    """The layer of atelier.<parts...>: the longest listed prefix."""
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return LAYERS["atelier"] if not parts else LAYERS[parts[0]]


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, target module parts under atelier) for every import of atelier in the file, at any depth."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    here = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
                if node.level - 1 > len(here):
                    continue
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "atelier":
                target = node.module.split(".")[1:]
            else:
                continue
            if node.module is None or not target:  # "from . import x" / "from .. import registry": x is a module
                for alias in node.names:
                    out.append((node.lineno, target + [alias.name] if (PACKAGE.joinpath(*target, alias.name + ".py")
                                                                         .exists() or PACKAGE.joinpath(
                        *target, alias.name).is_dir()) else target))
            else:
                out.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "atelier":
                    out.append((node.lineno, alias.name.split(".")[1:]))
    return out


def test_no_module_imports_one_above_it():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        own = _layer(parts)
        for line, target in _imports(path):
            if _layer(target) > own:
                bad.append(f"{'/'.join(rel.parts)}.py:{line} (layer {own}) imports atelier.{'.'.join(target)} "
                           f"(layer {_layer(target)})")
    assert not bad, "\n".join(bad)


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).with_suffix("").parts[0]
        assert top in LAYERS or top == "__init__", f"{top}: add it to LAYERS and to ARCHITECTURE.md"
