"""The runnable examples in examples/ run as documented, so the docs cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_example(name: str, *args: str) -> str:
    """Run examples/NAME as a user would, with no endpoint configured (the simulator); its
    standard output, after checking it exited 0."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_prompt_step_example_runs_on_the_simulator() -> None:
    """examples/prompt_step.py optimises a prompt on the in-process simulator in 3B+1 calls."""
    stdout = _run_example("prompt_step.py")
    assert "new system prompt: Answer the question." in stdout
    assert "calls: 13" in stdout


def test_service_example_serves_three_tenants_on_the_simulator() -> None:
    """examples/service.py --demo: three tenants' requests, one job each, usage per tenant."""
    stdout = _run_example("service.py", "--demo")
    lines = [
        line for line in stdout.splitlines() if line.split(":")[0] in ("gold", "silver", "bronze")
    ]
    assert len(lines) == 3 and all(", 4 calls, " in line for line in lines)
    assert "gold: weight 4" in stdout and "bronze: weight 1" in stdout


def test_molecule_example_docks_on_the_simulator() -> None:
    """examples/molecule_optimization.py: two molecules, two rounds, every design docked."""
    if not os.environ.get("CI"):
        pytest.importorskip("vina")
    stdout = _run_example("molecule_optimization.py")
    lines = [line for line in stdout.splitlines() if line.startswith("design")]
    assert len(lines) == 6 and all("Vina -" in line for line in lines)
    assert "dockings: " in stdout


_SPAWNS_WORKERS = ("make_pool(", "ProcessPool(", "DaskPool(", "pool=")


def _unguarded_runs(source: str) -> list[str]:
    """Module-level statements that start the program outside ``if __name__ == "__main__":``
    (a spawned worker re-imports the script and would run them again)."""
    import ast

    return [
        ast.unparse(node)
        for node in ast.parse(source).body
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
    ]


def test_python_snippets_that_spawn_workers_guard_their_entry_point() -> None:
    """Every Python block in docs/*.md and every example that uses a worker pool runs its
    program only under ``if __name__ == "__main__":``: spawned workers fail without it."""
    import re

    sources = {str(p): p.read_text() for p in sorted((ROOT / "examples").glob("*.py"))}
    for page in sorted((ROOT / "docs").glob("*.md")):
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
        sources.update({f"{page.name} block {i}": b for i, b in enumerate(blocks, 1)})
    checked = 0
    for where, source in sources.items():
        if any(marker in source for marker in _SPAWNS_WORKERS):
            checked += 1
            assert _unguarded_runs(source) == [], where
    assert checked >= 2  # the molecule example and the docs' science snippet
    assert _unguarded_runs("import x\nx.run(main())\n") == ["x.run(main())"]
