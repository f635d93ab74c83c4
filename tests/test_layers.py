"""The house rules of rlvr's layering, read statically from the source (ast; no rlvr module is imported):

(a) no module under rlvr/rollout/ imports rlvr.learner (rollout engines sit below the learner);
(b) no import circle among rlvr's modules. Only module-level imports count: those run when the module is
    imported. Imports inside a function body, and under `if TYPE_CHECKING:`, do not (they run later, or never),
    and a submodule's implicit import of its parent package is not an edge. `from rlvr import x` and
    `from rlvr.pkg import x` reach the submodule rlvr.x / rlvr.pkg.x when it exists, else the package;
    relative imports are resolved against the importing module's package;
(c) rlvr/report/ does not import the Hydra entry point rlvr.train;
(d) no function in rlvr/ is longer than 80 lines (def line to last line, docstring included) and no file is
    longer than 600 lines;
(e) no module of rlvr/ outside rlvr/reward/ imports a private (underscore) name from rlvr.reward or its
    submodules, nor a private submodule of it.
(a), (c) and (e) count every import statement, at module level or inside a function (a lazy import is a
dependency all the same), TYPE_CHECKING ones included.

Each check is a function of the repository root returning the offences (one line each, printed by the test);
the synthetic trees at the end show that each one catches a planted offender.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 600


def _modules(root: Path, package: str = "rlvr") -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root/package (a package is its __init__.py)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements; with module_level, not those in function bodies or under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if module_level and isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(dotted module, imported name or None) for each thing the statement imports; relative ones resolved."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [(base, alias.name) for alias in node.names]


def _targets(modules: dict[str, Path], target: str, name: str | None) -> list[str]:
    """The rlvr modules an import reaches: `from pkg import x` reaches pkg.x if it is a module, else pkg."""
    if name is not None and f"{target}.{name}" in modules:
        return [f"{target}.{name}"]
    return [target] if target in modules else []


def import_graph(root: Path, module_level: bool = True) -> dict[str, set[str]]:
    """Module -> the rlvr modules it imports (module-level imports only, by default)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _import_nodes(tree, module_level):
            for target, name in _imported(module, path, node):
                graph[module].update(t for t in _targets(modules, target, name) if t != module)
    return graph


def _imports_anywhere(root: Path, under: str, forbidden: str) -> list[str]:
    """Offences: modules under `under` (a dotted prefix) that import `forbidden`, at any depth of the file."""
    graph = import_graph(root, module_level=False)
    return [
        f"{m} imports {forbidden}"
        for m, targets in sorted(graph.items())
        if (m == under or m.startswith(under + ".")) and forbidden in targets
    ]


def rollout_imports_learner(root: Path) -> list[str]:
    """(a) rlvr/rollout/ modules that import rlvr.learner."""
    return _imports_anywhere(root, "rlvr.rollout", "rlvr.learner")


def report_imports_train(root: Path) -> list[str]:
    """(c) rlvr/report/ modules that import rlvr.train."""
    return _imports_anywhere(root, "rlvr.report", "rlvr.train")


def import_circles(root: Path) -> list[str]:
    """(b) Each strongly connected set of modules (Tarjan), written as one circle through it."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
    return [" -> ".join(_circle(graph, c)) for c in sorted(found)]


def _circle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first, inside it)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component


def long_functions_and_files(root: Path) -> list[str]:
    """(d) Functions over MAX_FUNCTION_LINES lines and files over MAX_FILE_LINES lines, under root/rlvr."""
    out = []
    for path in sorted((root / "rlvr").rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(root)
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            out.append(f"{rel}: {lines} lines (> {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{rel}:{node.lineno} {node.name}: {n} lines (> {MAX_FUNCTION_LINES})")
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def reward_private_imports(root: Path) -> list[str]:
    """(e) Imports, outside rlvr/reward/, of an underscore name from rlvr.reward or of a private submodule."""
    out = []
    for module, path in _modules(root).items():
        if module == "rlvr.reward" or module.startswith("rlvr.reward."):
            continue
        for node in _import_nodes(ast.parse(path.read_text(), str(path)), module_level=False):
            for target, name in _imported(module, path, node):
                if not (target == "rlvr.reward" or target.startswith("rlvr.reward.")):
                    continue
                if any(_private(p) for p in target.split(".")) or (name is not None and _private(name)):
                    what = f"{target}.{name}" if name else target
                    out.append(f"{path.relative_to(root)}:{node.lineno} imports {what}")
    return out


CHECKS = {
    "rollout imports the learner": rollout_imports_learner,
    "import circle": import_circles,
    "report imports rlvr.train": report_imports_train,
    "too long": long_functions_and_files,
    "private reward name imported": reward_private_imports,
}


@pytest.mark.parametrize("what", list(CHECKS))
def test_rlvr_keeps_its_layers(what):
    offences = CHECKS[what](ROOT)
    for line in offences:
        print(f"{what}: {line}")
    assert not offences, f"{what}:\n" + "\n".join(offences)


# ---- the checks themselves, on synthetic trees ------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in {"rlvr/__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


CLEAN = {
    "rlvr/errors.py": "class ConfigError(Exception):\n    pass\n",
    "rlvr/learner.py": "from rlvr.errors import ConfigError\nfrom rlvr.rollout import base\n",
    "rlvr/rollout/__init__.py": "from rlvr.rollout.base import Engine\n",
    "rlvr/rollout/base.py": (
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from rlvr.config import X\n\n"
        "class Engine:\n    pass\n"
    ),
    "rlvr/config.py": (
        "from rlvr.errors import ConfigError\n\n\ndef load():\n    from rlvr.reward.functions import load\n"
    ),
    "rlvr/reward/__init__.py": "from rlvr.reward.functions import load\n",
    "rlvr/reward/functions.py": "from rlvr.config import ConfigError\n\n\ndef load():\n    pass\n",
    "rlvr/report/plots.py": "from rlvr.errors import ConfigError\n",
}


def test_a_clean_tree_passes_every_check(tmp_path):
    """A lazy import (config -> reward.functions inside a function) and a TYPE_CHECKING one close no circle."""
    root = _tree(tmp_path, CLEAN)
    assert {what: check(root) for what, check in CHECKS.items()} == {what: [] for what in CHECKS}


@pytest.mark.parametrize(
    "what, files, expected",
    [
        (
            "rollout imports the learner",
            {"rlvr/rollout/vllm.py": "def f():\n    from rlvr.learner import RolloutBatch\n"},
            ["rlvr.rollout.vllm imports rlvr.learner"],
        ),
        (
            "rollout imports the learner",
            {"rlvr/rollout/hf.py": "from rlvr import learner\n"},
            ["rlvr.rollout.hf imports rlvr.learner"],
        ),
        (
            "import circle",  # config imports reward.functions at module level, which imports config
            {"rlvr/config.py": "from rlvr.reward.functions import load\n"},
            ["rlvr.config -> rlvr.reward.functions -> rlvr.config"],
        ),
        (
            "import circle",  # the `from rlvr import x` form, and a relative import
            {"rlvr/a.py": "from rlvr import b\n", "rlvr/b.py": "from . import a\n"},
            ["rlvr.a -> rlvr.b -> rlvr.a"],
        ),
        (
            "report imports rlvr.train",
            {
                "rlvr/train.py": "ERROR_FILENAME = 'error.txt'\n",
                "rlvr/report/runs.py": "from ..train import X\n",
            },
            ["rlvr.report.runs imports rlvr.train"],
        ),
        (
            "too long",
            {"rlvr/big.py": "def f():\n" + "    x = 1\n" * 80 + "\n" * 520},
            ["rlvr/big.py: 601 lines (> 600)", "rlvr/big.py:1 f: 81 lines (> 80)"],
        ),
        (
            "private reward name imported",
            {
                "rlvr/rollout/collect.py": "from rlvr.reward.functions import _compose, load\n",
                "rlvr/trainer.py": "def f():\n    from rlvr.reward._pool import Pool\n",
            },
            [
                "rlvr/rollout/collect.py:1 imports rlvr.reward.functions._compose",
                "rlvr/trainer.py:2 imports rlvr.reward._pool.Pool",
            ],
        ),
    ],
)
def test_each_check_names_a_planted_offender(tmp_path, what, files, expected):
    root = _tree(tmp_path, {**CLEAN, **files})
    assert CHECKS[what](root) == expected
    others = {w: check(root) for w, check in CHECKS.items() if w != what}
    assert others == {w: [] for w in others}  # and nothing else is blamed
