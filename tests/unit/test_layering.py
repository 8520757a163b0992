"""The layering of pgshroud's packages, read from the imports in the source.

The arrows point one way: proxy uses rewriter and policies, rewriter uses
policies, policies uses neither (pgshroud.sqlstate is shared by all three).
No modules import each other in a circle, whether the import is at the top
of a module or inside a function (a late import only hides a circle). A
package uses only the public names of another: a name or module that
starts with an underscore belongs to its own package.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"proxy": "pgshroud.proxy", "rewriter": "pgshroud.rewriter", "policies": "pgshroud.policies"}
SHARED = {"pgshroud", "pgshroud.sqlstate"}


@dataclass(frozen=True)
class Import:
    importer: str  # the module that imports
    line: int
    target: str  # the module imported, or the one a name is imported from
    names: tuple[str, ...]  # the names imported from `target` (empty for `import x`)


def _module_files() -> dict[str, Path]:
    files = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join((package, *parts))] = path
    return files


MODULES = _module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if _is_package(importer) else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports() -> list[Import]:
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(module, node.lineno, alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, node)
                names = tuple(alias.name for alias in node.names)
                # `from package import module` imports the module itself.
                submodules = [name for name in names if f"{target}.{name}" in MODULES]
                found += [Import(module, node.lineno, f"{target}.{name}", ()) for name in submodules]
                rest = tuple(name for name in names if name not in submodules)
                if rest:
                    found.append(Import(module, node.lineno, target, rest))
    return found


IMPORTS = _imports()
OWN = [i for i in IMPORTS if i.target.startswith("pgshroud")]


def _package_of(module: str) -> str:
    return module if _is_package(module) else module.rpartition(".")[0]


def _where(i: Import) -> str:
    names = f" ({', '.join(i.names)})" if i.names else ""
    return f"{MODULES[i.importer].relative_to(REPO)}:{i.line}: {i.target}{names}"


def test_every_import_of_pgshroud_names_a_module_that_exists():
    unknown = [_where(i) for i in OWN if i.target not in MODULES and i.target not in SHARED]
    assert not unknown, "\n".join(unknown)


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("pgshroud.policies", ("pgshroud.proxy", "pgshroud.rewriter")),
    ("pgshroud.rewriter", ("pgshroud.proxy",)),
])
def test_the_arrows_point_one_way(layer, forbidden):
    wrong = [_where(i) for i in OWN
             if (i.importer + ".").startswith(layer + ".") and (i.target + ".").startswith(tuple(f + "." for f in forbidden))]
    assert not wrong, f"{layer} must not import {' or '.join(forbidden)}:\n" + "\n".join(wrong)


def test_the_codec_needs_no_event_loop_and_nothing_else_of_pgshroud():
    codec = "pgshroud.proxy.codec"
    wrong = [_where(i) for i in IMPORTS if i.importer.startswith(codec)
             and (i.target.split(".")[0] == "asyncio"
                  or (i.target.startswith("pgshroud") and not i.target.startswith(codec) and i.target not in SHARED))]
    assert not wrong, "\n".join(wrong)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def test_no_modules_import_each_other_in_a_circle():
    edges: dict[str, set[str]] = {}
    for i in OWN:
        if i.target in MODULES:
            edges.setdefault(i.importer, set()).add(i.target)
    cycles = _cycles(edges)
    report = []
    for cycle in cycles:
        members = set(cycle)
        report.append(" <-> ".join(cycle) + "\n" + "\n".join(
            "  " + _where(i) for i in OWN if i.importer in members and i.target in members))
    assert not cycles, "import cycles:\n" + "\n".join(report)


def test_a_package_uses_only_public_names_of_another():
    private = []
    for i in OWN:
        if i.target not in MODULES:
            continue
        own_package = _package_of(i.importer)
        # A private module (codec._wire) is private to the package that holds it.
        if any(part.startswith("_") and not part.startswith("__") for part in i.target.split(".")) \
                and _package_of(i.target) != own_package:
            private.append(_where(i))
            continue
        if _package_of(i.target) == own_package and not _is_package(i.target):
            continue
        if i.target == own_package:  # a module of a package using its __init__
            continue
        names = [n for n in i.names if n.startswith("_") and not n.startswith("__")]
        if names:
            private.append(_where(i))
    assert not private, "private names imported from another package:\n" + "\n".join(private)


def test_the_reader_sees_every_module():
    # A guard on the test itself: the packages are read from their folders.
    assert "pgshroud.proxy.codec.framing" in MODULES
    assert "pgshroud.rewriter" in MODULES and _is_package("pgshroud.rewriter")
    assert any(i.importer.startswith("pgshroud.policies") for i in OWN)
