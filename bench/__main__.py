"""``python -m bench COMMAND``: asynctg's benchmarks. Each prints a table and writes JSON.

    python -m bench step|budget|overhead|scale|sandbox|aggregation [--quick] ...  one
    python -m bench batchsize [--base-url URL --model M] ...   accuracy vs B per strategy
    python -m bench all [--quick] [--check]                          all of them, then plots
    python -m bench gepa [--quick]                                  asynctg.gepa vs gepa 0.1.4
    python -m bench services [--quick]                  jobs on one engine: fairness, CPU
    python -m bench caching [--quick]          prompt caching's saving on a 5-step optimize run
    python -m bench tiers [--quick]              an optimize run at each eval tier: cost, time
    python -m bench plots                                            redraw the PNGs
    python -m bench report [--check]                                 headline + Markdown tables

``all --quick`` is the suite ``tox -e bench`` runs (under 10 minutes on 2 cores); without
``--quick`` TextGrad runs up to B=64, the budget fan-out is 5000 calls and the overhead
benchmark 2000 calls x 5 rounds. ``--check`` exits 1 when a headline target is missed.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

BENCHMARKS = {
    "step": "bench.step",
    "budget": "bench.budget",
    "overhead": "bench.overhead",
    "scale": "bench.scale",
    "sandbox": "bench.sandbox",
    "aggregation": "bench.aggregation",
}
TOOLS = {"plots": "bench.plots", "report": "bench.report", "batchsize": "bench.batchsize"}
#: Run on their own (they drive TextGrad's tutorial or custom engines, not the suite's targets).
EXTRA = {
    "tutorial": "bench.tutorial",
    "custom_engine": "bench.custom_engine",
    "shared": "bench.shared",
    "telemetry": "bench.telemetry",
    "science": "bench.science",
    "loadgen": "bench.loadgen",
    "gepa": "bench.gepa",
    "services": "bench.services",
    "caching": "bench.caching",
    "tiers": "bench.tiers",
}


def _main_of(module: str) -> Any:
    return importlib.import_module(module).main


def run_all(rest: list[str]) -> int:
    """Every benchmark in one run (``--quick`` passed on), then the plots and the headline."""
    from bench import report

    quick = "--quick" in rest
    started = time.perf_counter()
    for name, module in BENCHMARKS.items():
        print(f"== {name}", flush=True)
        _main_of(module)(["--quick"] if quick else [])
        print()
    total = time.perf_counter() - started
    print(f"== headline (whole suite: {total:.0f} s)")
    checks = report.write_headline(total, {"quick": quick, "command": "all"})
    if "--check" in rest and not all(c["ok"] for c in checks):
        return 1
    return 0


def main(argv: list[str]) -> int:
    names = [*BENCHMARKS, "all", *TOOLS, *EXTRA]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "all":
        return run_all(rest)
    if name in TOOLS:
        status: int = _main_of(TOOLS[name])(rest)
        return status
    if name in EXTRA:
        _main_of(EXTRA[name])(rest)
        return 0
    if name not in BENCHMARKS:
        print(f"unknown command {name!r}; choose from {', '.join(names)}", file=sys.stderr)
        return 2
    _main_of(BENCHMARKS[name])(rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
