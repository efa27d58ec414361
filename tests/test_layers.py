"""The package's layers import downwards only, and no two modules import each other.

Every import in plugin/aes_index counts, at module level and inside functions (read from
the source with `ast`, so an import that only runs on some path counts too). A module
imports modules of its own layer or of the layers below; within a layer, imports may go
either way but never round in a cycle. docs/ARCHITECTURE.md draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugin" / "aes_index"

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS = (
    ("base", ("aes_index", "aes_index.errors", "aes_index.values", "aes_index.atomic", "aes_index.paths",
              "aes_index.config", "aes_index.formats")),
    ("rule", ("aes_index.ownership", "aes_index.targets.protocol")),
    ("index", ("aes_index.index", "aes_index.model")),
    ("places", ("aes_index.targets",)),
    ("writing", ("aes_index.writing",)),
    ("features", ("aes_index.features", "aes_index.api")),
    ("cli", ("aes_index.cli",)),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best, layer = -1, None
    for number, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), number
    assert layer is not None, f"{module} is in no layer: add it to LAYERS"
    return layer


def imports_of(module: str) -> set[str]:
    """The package's modules `module` imports, anywhere in its source."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in MODULES and name != module and not module.startswith(name + "."):
                found.add(name)  # a package's own __init__ runs first anyway: no edge
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_its_own_layer_or_lower(module):
    upward = [f"{name} ({LAYERS[layer_of(name)][0]})" for name in sorted(GRAPH[module]) if layer_of(name) > layer_of(module)]
    assert not upward, f"{module} ({LAYERS[layer_of(module)][0]}) imports a higher layer: {', '.join(upward)}"


def test_no_import_cycle():
    """Tarjan's strongly connected components: any of more than one module is a cycle."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == [], f"import cycles: {cycles}"


def test_the_layer_test_sees_function_local_imports(tmp_path):
    """The graph holds imports made inside functions: the kind that hid a cycle before."""
    assert "aes_index.index.runner" in GRAPH["aes_index.features.darktable"]  # imported in _score() only
