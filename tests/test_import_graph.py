"""The architecture, as the imports show it: read LAYERS to learn where things live.

Every import of ``gradiend_core`` and ``dashboard`` is read with ``ast`` (imports inside functions
count: they run as soon as the function does), and three rules are checked:

* no import circle among the modules of either package;
* the core never imports the dashboard (the CLI starts it as another program: ``python -m dashboard``);
* the core is a stack of layers (LAYERS, bottom first): a module imports only from its own layer
  and the layers below it.

Imports under ``if TYPE_CHECKING:`` are left out: they never run (a
:class:`~gradiend_core.ranking.ranked_dims.RankedDims` names its ranking's class in annotations,
while :class:`~gradiend_core.ranking.ranking.Ranking` makes its views).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("gradiend_core", "dashboard")

#: The core's layers, bottom first. A module may import from its own layer and the layers listed
#: before it, never from a layer listed after it. A package's modules belong to its layer.
LAYERS = [
    # what every stage uses: errors, the version, numbers with units and the user cache directory
    ("foundation", ("gradiend_core.errors", "gradiend_core.version", "gradiend_core.util")),
    # the pipeline, stage by stage (it never imports analysis, curve, gradients, trainer or cli):
    # index spaces: the param_map and the coordinates of an input dim (the checkpoint's mapping
    # is a param_map, so the space sits below the checkpoint format)
    ("space", ("gradiend_core.space",)),
    # the checkpoint directory: its file names, format, reader, writer, records and sizes
    ("checkpoint", ("gradiend_core.checkpoint",)),
    # importance, its bucket codec, rankings and the rank store
    ("ranking", ("gradiend_core.ranking",)),
    # the selection rule, keep-masks and mask expressions
    ("selection", ("gradiend_core.selection",)),
    # plan, prune, reduction preview, export, reproduce, verify
    ("pruning", ("gradiend_core.pruning",)),
    # the reference-compatible model API (ParamMappedGradiendModel), on top of the pipeline
    ("model", ("gradiend_core.model",)),
    # the numbers of the dashboard's views
    ("analysis", ("gradiend_core.analysis",)),
    # base-model gradients: adapters, labelled data, cached evaluation gradients
    ("gradients", ("gradiend_core.gradients",)),
    # the pruning curve, on top of the gradients
    ("curve", ("gradiend_core.curve",)),
    # gradient statistics of a base model -> pre-prune selection
    ("prepruning", ("gradiend_core.prepruning",)),
    # training GRADIENDs with pre- and post-pruning
    ("trainer", ("gradiend_core.trainer",)),
    # the command line
    ("cli", ("gradiend_core.cli",)),
    # the package's public API (gradiend_core/__init__.py) gathers names from every layer
    ("public API", ("gradiend_core",)),
]


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import statement, also inside functions and classes, except under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _imports(ast.Module(body=[child], type_ignores=[])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _known(name: str) -> str:
    """The module a dotted name lands in (``a.b.c`` -> ``a.b`` when ``c`` is a name in ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _targets(module: str, path: Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [_known(a.name) for a in node.names]
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [_known(f"{source}.{a.name}") for a in node.names]


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = {t for node in _imports(tree) for t in _targets(module, path, node)}
        graph[module] = {t for t in found if t and t != module}
    return graph


GRAPH = _graph()


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and p.count(".") > depth:
                best, depth = i, p.count(".")
    assert best is not None, f"{module} is in no layer of LAYERS; add it where it belongs"
    return best


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _to_dashboard(graph: dict[str, set[str]]) -> list[str]:
    core = {m: ts for m, ts in graph.items() if m.startswith("gradiend_core")}
    return sorted(f"{m} -> {t}" for m, ts in core.items() for t in ts if t.startswith("dashboard"))


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a core module from a layer listed after its own."""
    wrong = []
    for module, targets in sorted(graph.items()):
        if not module.startswith("gradiend_core"):
            continue
        for target in sorted(targets):
            if target.startswith("gradiend_core") and _layer(target) > _layer(module):
                wrong.append(f"{module} ({LAYERS[_layer(module)][0]}) -> {target} ({LAYERS[_layer(target)][0]})")
    return wrong


def test_the_walk_sees_the_imports_it_checks():
    # the rules below are only as good as the walk: it must find top-level, relative and deferred imports
    assert "gradiend_core.checkpoint.files" in GRAPH["gradiend_core.checkpoint.targets"]
    assert "gradiend_core.space.param_map" in GRAPH["gradiend_core.checkpoint.format"]  # relative, two levels up
    assert "gradiend_core.model" in GRAPH["gradiend_core.curve.measures"]  # imported inside a method
    assert "gradiend_core.ranking.ranking" not in GRAPH["gradiend_core.ranking.ranked_dims"]  # TYPE_CHECKING only
    assert len(GRAPH) > 100


def test_no_import_circles():
    assert _cycles(GRAPH) == []


def test_the_core_never_imports_the_dashboard():
    assert _to_dashboard(GRAPH) == []


def test_each_core_module_imports_only_its_own_layer_and_the_layers_below():
    assert _upward(GRAPH) == []


def test_the_checks_report_what_they_forbid():
    bad = {
        "gradiend_core.pruning.plan": {"gradiend_core.analysis.locate"},  # the pipeline reaching into analysis
        "gradiend_core.checkpoint.targets": {"gradiend_core.pruning.export"},  # the format learning a name upstairs
        "gradiend_core.pruning.export": {"gradiend_core.checkpoint.targets"},
        "gradiend_core.cli.dashboard": {"dashboard.launch"},
        "dashboard.launch": set(),
        "gradiend_core.analysis.locate": set(),
    }
    assert _upward(bad) == [
        "gradiend_core.checkpoint.targets (checkpoint) -> gradiend_core.pruning.export (pruning)",
        "gradiend_core.pruning.plan (pruning) -> gradiend_core.analysis.locate (analysis)",
    ]
    assert _cycles(bad) == [["gradiend_core.checkpoint.targets", "gradiend_core.pruning.export"]]
    assert _to_dashboard(bad) == ["gradiend_core.cli.dashboard -> dashboard.launch"]
