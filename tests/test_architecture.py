"""The package's shape, enforced: imports point one way (cli → api → pipeline → stages →
core), no import cycle between modules, heavy libraries stay in their one subpackage.

A small AST walk over ``src/evalrun`` (every ``import`` statement, including those inside
functions; imports under ``if TYPE_CHECKING:`` count for the direction, not for cycles).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "evalrun"

# Lowest first. A module may import from its own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("evalrun", "evalrun.distribution", "evalrun.errors", "evalrun.records", "evalrun.secrets", "evalrun.canonical", "evalrun.catalogue"),
    ("evalrun.providers",),
    ("evalrun.checks",),
    ("evalrun.project",),
    ("evalrun.execution",),
    ("evalrun.judging",),
    ("evalrun.analysis",),
    ("evalrun.report",),
    ("evalrun.watch",),
    ("evalrun.pipeline",),
    ("evalrun.api",),
    ("evalrun.cli", "evalrun.__main__", "evalrun.testing"),
)
# Third-party libraries confined to one place (the import is seconds and hundreds of MB, or
# the dependency direction matters): library -> module prefixes allowed to import it.
CONFINED = {
    "litellm": ("evalrun.providers.litellm",),
    "click": ("evalrun.cli",),
    "llama_cpp": ("evalrun.providers.local",),
    "pandas": ("evalrun.analysis.compare",),
    "openai": ("evalrun.providers.litellm",),
    "httpx": ("evalrun.providers.litellm",),
    "aiohttp": ("evalrun.providers.litellm",),
    "ibis": ("evalrun.watch",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best, depth = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def _resolve(name: str, known: set[str]) -> str:
    """``evalrun.x.y`` where ``y`` may be a name inside module ``evalrun.x``."""
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def _imports() -> dict[str, list[tuple[str, bool, int]]]:
    """module -> [(imported name, only for type checking, line)]."""
    out: dict[str, list[tuple[str, bool, int]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        found: list[tuple[str, bool, int]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(a.name, id(node) in type_only, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.module, id(node) in type_only, node.lineno))
                if node.module.startswith("evalrun"):
                    found += [(f"{node.module}.{a.name}", id(node) in type_only, node.lineno) for a in node.names]
        out[_module_name(path)] = found
    return out


IMPORTS = _imports()
MODULES = set(IMPORTS)


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, found in IMPORTS.items():
        for name, _, line in found:
            if not name.startswith("evalrun"):
                continue
            target = _resolve(name, MODULES)
            if _layer(target) > _layer(module):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(set(wrong)))


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, found in IMPORTS.items():
        for name, type_only, _ in found:
            if name.startswith("evalrun") and not type_only:
                target = _resolve(name, MODULES)
                # A package's __init__ importing its own submodules is how packages work.
                if target != module and not target.startswith(module + "."):
                    graph[module].add(target)
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("library", sorted(CONFINED))
def test_heavy_libraries_stay_in_their_subpackage(library: str) -> None:
    allowed = CONFINED[library]
    outside = sorted({f"{m}:{line}" for m, found in IMPORTS.items() for name, _, line in found
                      if name.split(".")[0] == library and not m.startswith(allowed)})
    # importlib.import_module("litellm") counts too.
    pattern = re.compile(rf"import_module\(\s*[\"']{library}[\"'.]")
    for path in SRC.rglob("*.py"):
        module = _module_name(path)
        if not module.startswith(allowed) and pattern.search(path.read_text(encoding="utf-8")):
            outside.append(module)
    assert not outside, f"{library} imported outside {allowed}: {outside}"


def test_the_walk_sees_what_it_checks() -> None:
    """The checks above are only as good as the walk: it must find the known edges."""
    assert ("evalrun.errors", False) in {(n, t) for n, t, _ in IMPORTS["evalrun.cli"]}
    assert any(n.startswith("evalrun.execution") for n, _, _ in IMPORTS["evalrun.pipeline"])
    assert _layer("evalrun.execution.run") > _layer("evalrun.project.loader")
