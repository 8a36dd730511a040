"""The headline checks of issue 4 and Markdown tables, read back from the result files.

    python -m bench report [--check]     # print the headline and every table as Markdown

The headline is what asynctg promises, measured: the native step at B=32 and 100 ms at least
15x faster than TextGrad 0.1.8 and within 1.5x of the critical-path bound; the unchanged script
on ``asynctg.compat`` at least 2.5x faster than on TextGrad; at least 95% of an rpm limit used
with at most 1% of requests answered 429 when the engine is told the limit; client CPU per call
at most 0.2x openai-python's and at most 2x a bare aiohttp loop's. ``--check`` exits 1 when one
is missed (or was not measured).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from typing import Any

from bench import budget, overhead, scale, step
from bench.common import read_result, table, write_result

Check = dict[str, Any]


def _check(name: str, value: float | None, op: str, target: float, source: str) -> Check:
    ok = value is not None and (value >= target if op == ">=" else value <= target)
    return {
        "check": name,
        "measured": value,
        "target": f"{op} {target}",
        "ok": ok,
        "source": source,
    }


def _step_checks() -> Iterator[Check]:
    data = read_result("step_string")
    row: dict[str, Any] = {}
    if data is not None and abs(data["results"]["latency_s"] - 0.1) < 1e-9:
        row = _row(data, lambda r: r["B"] == 32)
    src = "step_string.json, B=32, 100 ms"
    yield _check("native step: x faster than TextGrad 0.1.8", row.get("speedup"), ">=", 15, src)
    yield _check(
        "native step: x the bound (4 x 100 ms)", row.get("asynctg_x_bound"), "<=", 1.5, src
    )
    yield _check(
        "unchanged script: asynctg.compat x faster than TextGrad",
        row.get("compat_speedup"),
        ">=",
        2.5,
        src,
    )


def _budget_checks() -> Iterator[Check]:
    row = _row(read_result("budget"), lambda r: r["scenario"] == "rpm" and r["mode"] == "told")
    src = "budget.json, rpm scenario, told"
    yield _check("rpm utilisation (floor / wall)", row.get("utilisation"), ">=", 0.95, src)
    yield _check("% of requests answered 429", row.get("pct_429"), "<=", 1.0, src)


def _overhead_checks() -> Iterator[Check]:
    data = read_result("overhead")
    for loop in ("asyncio", "uvloop"):
        row = _row(data, lambda r, loop=loop: r["key"] == "asynctg" and r["loop"] == loop)
        src = f"overhead.json, {loop}"
        yield _check(f"CPU/call x openai-python ({loop})", row.get("x_openai"), "<=", 0.2, src)
        yield _check(f"CPU/call x bare aiohttp ({loop})", row.get("x_aiohttp"), "<=", 2.0, src)


def _row(data: dict[str, Any] | None, pick: Callable[..., bool]) -> dict[str, Any]:
    """The first result row ``pick`` accepts; {} when there is none (or no result file)."""
    if data is None:
        return {}
    return next((r for r in data["results"]["rows"] if pick(r)), {})


def headline() -> list[Check]:
    """Every headline check against the result files as they are now."""
    return [*_step_checks(), *_budget_checks(), *_overhead_checks()]


def write_headline(total_wall_s: float | None, settings: dict[str, Any]) -> list[Check]:
    """Print the headline and write ``headline.json`` (with the whole suite's wall time)."""
    checks = headline()
    print(table(checks, ["check", "measured", "target", "ok"]))
    write_result("headline", settings, {"checks": checks, "total_wall_s": total_wall_s})
    return checks


_TABLES = {
    "step_string": step.COLUMNS,
    "step_judge": step.COLUMNS,
    "budget": budget.COLUMNS,
    "overhead": overhead.COLUMNS,
    "scale": scale.COLUMNS,
}


def markdown() -> str:
    """The headline and every result table, as Markdown."""
    parts = ["### Headline", "", table(headline(), ["check", "measured", "target", "ok"])]
    for name, columns in _TABLES.items():
        data = read_result(name)
        if data is None:
            continue
        rows = data["results"]["rows"]
        cols = [c for c in columns if any(c in r for r in rows)]
        parts += ["", f"### {name} ({data['machine']['date']})", "", table(rows, cols)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench report")
    parser.add_argument("--check", action="store_true", help="exit 1 if a headline is missed")
    args = parser.parse_args(argv)
    print(markdown())
    if args.check and not all(c["ok"] for c in headline()):
        print("a headline check was missed", file=sys.stderr)
        return 1
    return 0
