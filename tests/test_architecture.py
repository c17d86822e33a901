"""The package's layering (docs/architecture.md), checked by walking every import in ``src/dvis``.

Layers, bottom to top: errors and the small utilities beside it; modeling and data; compat and
evaluation; training and inference; the command line and the public API (``dvis/__init__.py``).
A module may import its own package and any lower layer, never a higher one; imports inside
functions count too (those under ``if TYPE_CHECKING:``, for annotations only, do not). Packages of one layer may use each other, but no two packages (and no two
modules) may import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
LAYERS = {
    "errors": 0, "fileio": 0, "config": 0,
    "modeling": 1, "data": 1,
    "compat": 2, "evaluation": 2,
    "training": 3, "inference": 3,
    "cli": 4, "demo": 4, "__main__": 4, "": 4,  # "" = dvis/__init__.py, the public API
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imported_modules(path: Path) -> set[str]:
    """Every ``dvis`` module that ``path`` imports at run time, at any depth of its code."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return {m for m in found if m == "dvis" or m.startswith("dvis.")}


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def top_package(module: str) -> str:
    """``dvis.modeling.dvis`` -> ``modeling``; ``dvis`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_package_has_a_layer():
    unknown = {top_package(m) for m in import_graph()} - set(LAYERS)
    assert not unknown, f"packages without a layer in tests/test_architecture.py: {sorted(unknown)}"


def test_no_import_from_a_higher_layer():
    upward = [f"{module} (layer {LAYERS[top_package(module)]}) imports {target} "
              f"(layer {LAYERS[top_package(target)]})"
              for module, targets in import_graph().items() for target in sorted(targets)
              if LAYERS[top_package(target)] > LAYERS[top_package(module)]]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if top_package(module) == "":
            continue  # the public API re-exports everything by design
        graph.setdefault(top_package(module), set()).update(
            top_package(t) for t in targets if top_package(t) not in ("", top_package(module)))
    return graph


def module_graph() -> dict[str, set[str]]:
    graph = import_graph()
    # a package's __init__ is imported with each of its modules; leave those edges out
    return {m: {t for t in targets if not (m.startswith(t + ".") and t != m)} for m, targets in graph.items()}


@pytest.mark.parametrize("level", ["package", "module"])
def test_no_import_circle(level):
    graph = package_graph() if level == "package" else module_graph()
    cycle = _cycle(graph)
    assert cycle is None, f"{level} import circle: {' -> '.join(cycle)}"


def test_the_checker_sees_circles_and_upward_imports():
    """The checks above can fail: a made-up circle and a made-up upward import are found."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert LAYERS[top_package("dvis.modeling.dvis")] < LAYERS[top_package("dvis.compat.official")]
    tree = ast.parse("import a\nif TYPE_CHECKING:\n    import b\nelse:\n    import c\ndef f():\n    import d\n")
    imported = {alias.name for n in _runtime_nodes(tree) if isinstance(n, ast.Import) for alias in n.names}
    assert imported == {"a", "c", "d"}


def test_every_name_in_docs_architecture_exists():
    """docs/architecture.md names functions and classes as `dvis.module.name`: each must import."""
    import importlib
    import re

    text = (SRC.parent / "docs" / "architecture.md").read_text()
    missing = []
    for dotted in sorted(set(re.findall(r"`(dvis(?:\.\w+)+)", text))):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                target = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        try:
            for name in parts[cut:]:
                target = getattr(target, name)
        except AttributeError:
            missing.append(dotted)
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"
