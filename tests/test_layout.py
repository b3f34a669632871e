"""The house rules of the package (shared/docs/design.md): imports only go down the data flow.

Read from the source with `ast`, every import counted, lazy ones inside functions too (only
`if TYPE_CHECKING:` blocks are left out, they never run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unetkit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("unetkit"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            if base.startswith("unetkit"):  # `from unetkit import progress` imports the module unetkit.progress
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, set(modules)):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


GRAPH = _graph()


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "unetkit"


def test_no_import_circles():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
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
                circles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in GRAPH:
        if node not in index:
            visit(node)
    assert circles == []


@pytest.mark.parametrize("stage, forbidden", [
    ("nn", {"*"}),  # the network stands alone: it can be read and copied without the rest
    ("reference", {"*"}),
    ("data", {"train", "model", "infer", "report", "serve", "plan", "cli"}),
    ("model", {"train", "infer", "report", "serve", "plan", "cli"}),
    ("infer", {"train", "report", "serve", "plan", "cli"}),
    ("plan", {"train", "report", "serve", "cli"}),
    ("train", {"report", "serve", "cli"}),
    ("report", {"serve", "cli"}),
])
def test_imports_only_go_down_the_data_flow(stage, forbidden):
    own = {"nn", "reference"} if stage in ("nn", "reference") else set()
    bad = []
    for module, targets in GRAPH.items():
        if _stage(module) != stage:
            continue
        for target in targets:
            other = _stage(target)
            if other == stage:
                continue
            if ("*" in forbidden and other not in own) or other in forbidden:
                bad.append(f"{module} -> {target}")
    assert bad == []


def test_nothing_imports_the_cli():
    assert [m for m, targets in GRAPH.items() if "unetkit.cli" in targets and m != "unetkit.__main__"] == []


def test_inference_loads_no_training_code_and_help_loads_no_torch():
    code = ("import sys, unetkit.infer, unetkit.model.store; "
            "print(sorted(m for m in sys.modules if m.startswith('unetkit.train')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    code = "import sys, unetkit.cli; unetkit.cli.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_public_api_is_as_documented():
    import unetkit

    for name in ("UNet", "UNetOptions", "TrainConfig", "train", "evaluate", "load", "predict", "Predictor",
                 "decode", "probabilities", "summarize", "UnetkitError"):
        assert hasattr(unetkit, name), name
    assert callable(unetkit.train) and not isinstance(unetkit.train, type(unetkit))
    import unetkit.train.trainer  # noqa: F401  (the package of the same name does not replace the function)

    assert callable(unetkit.train)
