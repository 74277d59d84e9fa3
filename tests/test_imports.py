"""The package's layering: no import cycle anywhere in src/, and inference, evaluation, interpretation, serving
and robustness tests never import a training recipe (nor anything that does)."""

import ast
from pathlib import Path

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
    """Predicting needs no metrics: BIO decoding lives in bertkit.data.bio, below both."""
    graph = import_graph()
    bad = sorted(name for name in graph if name.startswith("bertkit.inference")
                 and any(m.startswith("bertkit.evaluate") for m in graph[name]))
    assert not bad, f"these import bertkit.evaluate: {bad}"
