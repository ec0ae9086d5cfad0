"""Import layout: layers that import downwards only, no cycles, and a read path without Ray.

``LAYERS`` is the package's architecture, lowest first. A module may import its own layer and
the layers below it; any import (at module level or inside a function) that goes up or
sideways across the table fails ``test_imports_go_downwards_only``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import qeu_tune

PACKAGE = Path(qeu_tune.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "conf" not in p.relative_to(PACKAGE).parts[:1]}


def _with_parents(name: str, known: Dict[str, Path], importer: str) -> List[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ too (except the importer's own
    packages, which Python has initialised before the importer runs)."""
    parts = name.split(".")
    found = [".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in known]
    return [m for m in found if not importer.startswith(m + ".")]


def import_graph() -> Dict[str, Set[str]]:
    """Every ``import`` statement of every module, at any depth (lazy imports included)."""
    known = modules()
    graph: Dict[str, Set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for target in targets:
                if target.startswith("qeu_tune"):
                    graph[name].update(t for t in _with_parents(target, known, name) if t != name)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


LAYERS = (
    "core",  # names, tags, paths, errors, redaction, child processes
    "rt",  # RT method: pure numpy
    "envs",  # built-in environments
    "reward",  # know-how sources and diagnostics, reward designs, the wrapper
    "config",  # schemas, composition, validation rules, the trial template
    "tracking",  # tracker, journal, sync: writes to MLflow, no Ray
    "analysis",  # reads MLflow back: runs, statistics, tables, plots, reports; no Ray
    "engine",  # Ray Tune and RLlib: search space, trainable, plan, run, callback, resume
    "commands",  # one module per CLI command
)
TOP_LEVEL = {"qeu_tune", "qeu_tune.__main__"}


def layer_of(module: str) -> int:
    parts = module.split(".")
    assert module in TOP_LEVEL or parts[1] in LAYERS, f"{module} is in no layer of LAYERS"
    return len(LAYERS) if module in TOP_LEVEL else LAYERS.index(parts[1])


def test_every_module_lives_in_a_layer():
    loose = sorted(m for m in modules() if m not in TOP_LEVEL and m.split(".")[1] not in LAYERS)
    assert not loose, f"modules outside the layers: {loose}"


def test_imports_go_downwards_only():
    graph = import_graph()
    wrong = sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if b != "qeu_tune" and layer_of(b) > layer_of(a)
    )
    assert not wrong, "imports that go up the layers:\n" + "\n".join(wrong)


MAX_LINES, WHOLE_LINES = 500, 400


def test_modules_are_small_or_say_why_they_stay_whole():
    """No module over 500 lines; one over ~400 says in its docstring why it stays whole."""
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by job"
        if lines > WHOLE_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert "whole" in doc.lower(), f"{name}: {lines} lines, and its docstring does not say why it stays whole"


def test_walker_sees_lazy_imports():
    graph = import_graph()
    assert "qeu_tune.engine.run" in graph["qeu_tune.commands.rerun"]  # imported inside a function


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_reading_runs_back_does_not_import_ray():
    code = "import sys, qeu_tune.analysis.runs; bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')); print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "[]", out


def test_the_read_path_works_where_ray_cannot_be_imported(tmp_path, isolated_home):
    """`qeu-tune report`, `best`, `knowhow` and `sync` in an environment where `import ray` fails."""
    from fake_sweep import record_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    configs = {"low": {"algo.params.lr": 1e-4}, "high": {"algo.params.lr": 1e-3}}
    record_sweep(
        uri,
        configs,
        lambda values, seed, steps: steps / 100.0 * (2 if values["algo.params.lr"] > 5e-4 else 1),
        seeds=(0, 1),
    )
    blocker = tmp_path / "blocked" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('ray is blocked: the read path must not need it')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])}
    qeu = [sys.executable, "-m", "qeu_tune.commands.main"]
    commands = {
        "report": [*qeu, "--tracking-uri", uri, "report", "fake-sweep", "--out", str(tmp_path / "report")],
        "best": [*qeu, "--tracking-uri", uri, "best", "fake-sweep", "--out", str(tmp_path / "best.yaml")],
        "knowhow": [*qeu, "knowhow", "reward=cartpole_rt", "--episodes", "1"],
        "sync": [*qeu, "sync"],
    }
    for name, argv in commands.items():
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, f"qeu-tune {name} without Ray: {done.stderr[-2000:]}"
    assert (tmp_path / "best.yaml").exists() and any((tmp_path / "report").iterdir())
    check = subprocess.run([sys.executable, "-c", "import ray"], capture_output=True, env=env, timeout=60)
    assert check.returncode != 0  # the blocker really blocks
