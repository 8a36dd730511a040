"""Code sandbox: what bubblewrap isolation costs per program, and that honest verdicts hold.

    python -m bench sandbox [--quick] [--runs 40]

One program with one test, run ``--runs`` times one after another, under bubblewrap and as a
plain child process with the same harness and limits (``isolation="unsafe-no-sandbox"``); the
difference of the medians is the isolation's overhead per program (target: under 50 ms on
2 cores). Then every program of ``tests/honest_programs.py`` (python_basics and the LeetCode-Hard
sample, right and wrong) runs under bubblewrap, two at a time, and its pass/fail vector is
checked against plain Python's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.common import ROOT, table, write_result

_PROGRAM = "def f(x):\n    return x + 1\n"
_TESTS = ["assert f(1) == 2"]


async def _per_program(isolation: Any, runs: int) -> list[float]:
    from asynctg.apps import CodeRunner

    runner = CodeRunner(isolation=isolation, max_parallel=1)
    await runner.run(_PROGRAM, _TESTS)  # warm-up: the probe and the first page-ins
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        run = await runner.run(_PROGRAM, _TESTS)
        seconds.append(time.perf_counter() - started)
        if not run.all_passed:
            raise RuntimeError(f"the trivial program failed under {isolation}: {run}")
    return seconds


async def _honest() -> dict[str, Any]:
    import sys

    from asynctg import tasks
    from asynctg.apps import CodeRunner

    sys.path.insert(0, str(ROOT / "tests"))
    from honest_programs import PROGRAMS

    problems = {p.task_id: p for p in tasks.python_basics()}
    sample = tasks.load_leetcode(ROOT / "tests/data/leetcode_hard_sample.jsonl")
    problems |= {p.task_id: p for p in sample}
    cases = [(tid, code, want) for tid, items in PROGRAMS.items() for code, want in items]
    runner = CodeRunner()
    started = time.perf_counter()
    runs = await asyncio.gather(*(runner.run(code, problems[t].tests) for t, code, _ in cases))
    seconds = time.perf_counter() - started
    same = sum(run.passed == want for run, (*_, want) in zip(runs, cases, strict=True))
    return {
        "programs": len(cases),
        "verdicts_as_plain_python": same,
        "all_tests_passed": sum(run.all_passed for run in runs),
        "seconds": round(seconds, 3),
        "isolation": runs[0].isolation,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench sandbox")
    parser.add_argument("--quick", action="store_true", help="fewer runs (20)")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args(argv)
    runs = args.runs or (20 if args.quick else 40)
    rows = []
    medians = {}
    for isolation in ("bubblewrap", "unsafe-no-sandbox"):
        seconds = asyncio.run(_per_program(isolation, runs))
        medians[isolation] = statistics.median(seconds)
        rows.append(
            {
                "isolation": isolation,
                "runs": runs,
                "median ms": round(1000 * medians[isolation], 1),
                "p90 ms": round(1000 * sorted(seconds)[int(0.9 * (len(seconds) - 1))], 1),
            }
        )
    overhead_ms = round(1000 * (medians["bubblewrap"] - medians["unsafe-no-sandbox"]), 1)
    honest = asyncio.run(_honest())
    print(table(rows, ["isolation", "runs", "median ms", "p90 ms"]))
    print(f"bubblewrap overhead per program: {overhead_ms} ms (target < 50 ms)")
    print(
        f"honest programs: {honest['verdicts_as_plain_python']}/{honest['programs']} with plain "
        f"Python's verdicts, {honest['all_tests_passed']} pass every test, "
        f"{honest['seconds']} s in all"
    )
    path = write_result(
        "sandbox",
        {"runs": runs, "quick": args.quick},
        {"per_program": rows, "overhead_ms": overhead_ms, "honest": honest},
    )
    print(f"written: {path}")
