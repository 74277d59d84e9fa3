"""The package's layering: no import cycle anywhere in src/, between modules or between packages; inference,
evaluation, interpretation, serving and robustness tests never import a training recipe (nor anything that does);
training data and inference stand side by side on bertkit.encoding, neither importing the other."""

import ast
from pathlib import Path

import pytest

import bertkit

SRC = Path(bertkit.__file__).parent
RECIPES = {"bertkit.finetune", "bertkit.pretrain", "bertkit.trainer", "bertkit.runs", "bertkit.demo",
           "bertkit.baseline", "bertkit.distill", "bertkit.distill.recipe"}
SERVING = ("bertkit.inference", "bertkit.evaluate", "bertkit.interpret", "bertkit.serve", "bertkit.embeddings",
           "bertkit.export", "bertkit.robust")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the bertkit modules it imports anywhere in its source (function-level imports too)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bertkit"):
                for alias in node.names:  # `from bertkit.cli import data` imports the module bertkit.cli.data
                    full = f"{node.module}.{alias.name}"
                    edges.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("bertkit")}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycles():
    graph = import_graph()
    # a package importing its own submodules (bertkit.inference -> bertkit.inference.text) is how packages
    # expose their parts; a cycle is a module that can reach itself through the others
    cycles = sorted(name for name in graph if name in reachable(
        {k: {e for e in v if not e.startswith(k + ".")} for k, v in graph.items()}, name))
    assert not cycles, f"modules in an import cycle: {cycles}"


def package(name: str) -> str:
    """The node a module counts as between packages: bertkit.data.tasks -> bertkit.data; a top-level module
    (bertkit.tokenizer) and the root (bertkit) are their own."""
    return ".".join(name.split(".")[:2])


def test_no_import_cycles_between_packages():
    """Modules grouped by package: bertkit.data -> bertkit.inference -> bertkit.data is a cycle even when no module
    reaches itself. The root package importing its parts (bertkit -> bertkit.inference) is not an edge."""
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for name, edges in graph.items():
        packages.setdefault(package(name), set())
        if name != "bertkit":
            packages[package(name)] |= {package(e) for e in edges} - {package(name)}
    cycles = sorted(p for p in packages if p in reachable(packages, p))
    why = sorted(f"{a} -> {b}" for a, edges in graph.items() for b in edges
                 if package(a) in cycles and package(b) in cycles and package(a) != package(b))
    assert not cycles, f"packages in an import cycle: {cycles}, through {why}"


# training data and inference stand side by side on bertkit.encoding (the Encoded item, batches, words, BIO, the QA
# record): a package here reaches none of the packages it is paired with, directly or through another module
NEVER_REACHES = {
    "bertkit.data": ("bertkit.inference", "bertkit.interpret"),
    "bertkit.inference": ("bertkit.data",),
    "bertkit.encoding": ("bertkit.data", "bertkit.inference", "bertkit.interpret", "bertkit.evaluate"),
}


@pytest.mark.parametrize("importer", sorted(NEVER_REACHES))
def test_layers_between_data_encoding_and_inference(importer):
    graph = import_graph()
    bad = {name: sorted(m for m in reachable(graph, name) if package(m) in NEVER_REACHES[importer])
           for name in graph if package(name) == importer}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{importer} must not reach {NEVER_REACHES[importer]}: {bad}"


def test_inference_evaluation_interpretation_import_no_recipe():
    graph = import_graph()
    bad = {}
    for name in graph:
        if name.startswith(SERVING):
            recipes = reachable(graph, name) & RECIPES
            if recipes:
                bad[name] = sorted(recipes)
    assert not bad, f"these import a training recipe (directly or through another module): {bad}"


def test_recipes_import_no_audit():
    """Training recipes use the training defences (bertkit.adversarial, bertkit.data.noise), never the audit."""
    graph = import_graph()
    bad = {name: sorted(m for m in reachable(graph, name) if m.startswith("bertkit.robust"))
           for name in RECIPES if name in graph}
    assert not {k: v for k, v in bad.items() if v}, f"these reach the robustness audit: {bad}"


def test_inference_imports_no_evaluation():
    """Predicting needs no metrics: BIO decoding lives in bertkit.encoding.bio, below both."""
    graph = import_graph()
    bad = sorted(name for name in graph if name.startswith("bertkit.inference")
                 and any(m.startswith("bertkit.evaluate") for m in graph[name]))
    assert not bad, f"these import bertkit.evaluate: {bad}"
