"""The import rules of docs/DESIGN.md ("What may import what"), checked on the real import graph.

grimp reads every ``import`` statement of the package, lazy ones inside functions included
(a lazy import is still a dependency, and a lazy import back into a module that imports you is
still an import circle).
"""
from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")

PACKAGE = "gcf_trt"
# Leaves every layer may use; they import nothing of gcf_trt but each other.
FOUNDATION = ("gcf_trt.errors", "gcf_trt.spec", "gcf_trt.manifest", "gcf_trt.fsutil", "gcf_trt.preprocess")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(PACKAGE, include_external_packages=True)


def internal_modules(graph) -> list[str]:
    return sorted(m for m in graph.modules if m == PACKAGE or m.startswith(PACKAGE + "."))


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected components (> 1 module) of the direct-import graph inside the package."""
    modules = internal_modules(graph)
    inside = set(modules)
    edges = {m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n in inside) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan, iterative enough for a package of ~100 modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return cycles


def test_checker_sees_a_cycle_and_a_forbidden_import():
    """The checks below can fail: a two-module circle and a runtime->torch import are found."""
    g = grimp.ImportGraph()
    for m in ("gcf_trt", "gcf_trt.a", "gcf_trt.b", "gcf_trt.runtime", "gcf_trt.runtime.x", "torch"):
        g.add_module(m)
    g.add_import(importer="gcf_trt.a", imported="gcf_trt.b")
    g.add_import(importer="gcf_trt.b", imported="gcf_trt.a")
    g.add_import(importer="gcf_trt.runtime.x", imported="torch")
    assert import_cycles(g) == [["gcf_trt.a", "gcf_trt.b"]]
    assert g.find_shortest_chain(importer="gcf_trt.runtime.x", imported="torch") == ("gcf_trt.runtime.x", "torch")


def test_no_import_cycle_inside_the_package(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import circles (each list imports itself round; break them with a module both import): " \
                       + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("forbidden", ["torch", "torchvision", "gcf_trt.compile", "gcf_trt.commands",
                                       "gcf_trt.cli", "gcf_trt.bench", "gcf_trt.train", "gcf_trt.data"])
def test_runtime_imports_neither_torch_nor_compile(graph, forbidden):
    """gcf_trt.runtime is what a camera app installs: no torch, no build code, no CLI - not even
    through a module it imports."""
    if forbidden not in graph.modules:
        pytest.skip(f"{forbidden} is not imported anywhere in {PACKAGE}")
    targets = [forbidden, *graph.find_descendants(forbidden)] if not forbidden.startswith("torch") else [forbidden]
    runtime = [m for m in internal_modules(graph) if m == "gcf_trt.runtime" or m.startswith("gcf_trt.runtime.")]
    assert runtime, "gcf_trt.runtime not found"
    chains = []
    for importer in runtime:
        for target in targets:
            chain = graph.find_shortest_chain(importer=importer, imported=target)
            if chain:
                chains.append(" -> ".join(chain))
    assert not chains, f"gcf_trt.runtime reaches {forbidden}: " + "; ".join(sorted(set(chains))[:5])


def test_foundation_modules_import_only_each_other(graph):
    """errors/spec/manifest/fsutil/preprocess sit under every layer, so they import no layer."""
    bad = []
    for m in FOUNDATION:
        for n in graph.find_modules_directly_imported_by(m):
            if n.startswith(PACKAGE + ".") and n not in FOUNDATION:
                bad.append(f"{m} -> {n}")
    assert not bad, bad


def test_only_the_cli_imports_commands(graph):
    """commands/ parse arguments and call the library; the library never calls back into them
    (``__main__`` modules are entry points like the CLI and may)."""
    bad = []
    for m in internal_modules(graph):
        if m.startswith(("gcf_trt.commands", "gcf_trt.cli")) or m.endswith(".__main__"):
            continue  # the CLI itself, and `python -m` entry points, which are CLIs too
        for n in graph.find_modules_directly_imported_by(m):
            if n.startswith(("gcf_trt.commands", "gcf_trt.cli")):
                bad.append(f"{m} -> {n}")
    assert not bad, bad
