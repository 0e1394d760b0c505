"""The layers hold: jobs/ (the worker side) builds on orchestrator.core only, orchestrator.core on nothing
else of ours, the driver reaches jobs/ only inside functions, no module-level import cycle, and the
driver side imports without torch (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "bitsandbytes")


def modules(package: str) -> Dict[str, Path]:
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path) -> Iterator[Tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from orchestrator.publish import hub` imports the module ...publish.hub
                yield f"{node.module}.{a.name}", id(node) in top


def ours(name: str) -> bool:
    return name.split(".")[0] in ("orchestrator", "jobs")


def _owner(name: str, known: Dict[str, Path]) -> str:
    """The project module an imported name lives in (`a.b.func` -> `a.b`)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


ALL = {**modules("orchestrator"), **modules("jobs")}


@pytest.mark.parametrize(
    "package,allowed", [("jobs", ("jobs", "orchestrator.core")), ("orchestrator/core", ("orchestrator.core",))]
)
def test_dependencies_point_one_way(package, allowed):
    bad = []
    for mod, path in modules(package).items():
        for name, _ in imports(path):
            if ours(name) and not any(name == a or name.startswith(a + ".") for a in allowed):
                bad.append(f"{mod} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_driver_reaches_the_worker_side_only_inside_functions():
    bad = [
        f"{mod} imports {name} at module level"
        for mod, path in modules("orchestrator").items()
        for name, top in imports(path)
        if top and name.split(".")[0] == "jobs"
    ]
    assert not bad, "\n".join(bad)


def test_no_module_level_import_cycle():
    graph: Dict[str, Set[str]] = {m: set() for m in ALL}
    for mod, path in ALL.items():
        for name, top in imports(path):
            owner = _owner(name, ALL)
            if top and ours(name) and owner and owner != mod and owner not in ("orchestrator", "jobs"):
                graph[mod].add(owner)
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if not state.get(n):
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)


def test_the_driver_side_imports_without_torch():
    """Every orchestrator module imports with torch & co. blocked, and none of them loads boto3 or
    huggingface_hub at import time (the CLI starts fast and runs where no GPU stack is installed)."""
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {HEAVY!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {sorted(modules('orchestrator'))!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = [m for m in ('boto3', 'huggingface_hub', 'wandb', 'mlflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
