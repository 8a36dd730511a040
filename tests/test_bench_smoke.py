"""Every benchmark runs at its smallest size, so none of them rots.

Each runs as ``python -m bench ...`` in a subprocess against its own simulator, writing into a
temporary results folder (``BENCH_RESULTS``), exactly as ``python -m bench all`` would.
TextGrad's variants run when textgrad 0.1.8 is installed (the ``reference`` extra); the plots
when matplotlib is (the ``test`` and ``bench`` extras both install it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# bench/ is not installed with the package: the benchmarks run from the checkout, in children


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAS_TEXTGRAD = has_module("textgrad")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One results folder shared by the module's benchmarks (the plots read them all)."""
    return tmp_path_factory.mktemp("bench-results")


def _bench(results: Path, *args: str) -> str:
    env = {**os.environ, "BENCH_RESULTS": str(results), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=150,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def _result(results: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    assert data["machine"]["versions"]["asynctg"]
    assert data["machine"]["cpus"]
    return data


@pytest.fixture(scope="module")
def step(results: Path) -> Path:
    tiny = ("--batch-sizes", "1", "--latency", "0")
    _bench(results, "step", *tiny, "--losses", "string")
    # TextGrad's import alone takes seconds: its judge variant is left to the real runs.
    _bench(results, "step", *tiny, "--losses", "judge", "--textgrad-max-batch", "0")
    return results


@pytest.fixture(scope="module")
def budget(results: Path) -> Path:
    args = ("--calls", "12", "--rpm", "1200", "--tpm", "1000000", "--latency", "0")
    _bench(results, "budget", *args)
    return results


@pytest.fixture(scope="module")
def overhead(results: Path) -> Path:
    # uvloop differs by one loop factory: asyncio alone keeps the smoke run short
    args = ("--calls", "20", "--warmup", "5", "--rounds", "1", "--loops", "asyncio")
    _bench(results, "overhead", *args)
    return results


@pytest.fixture(scope="module")
def scale(results: Path) -> Path:
    _bench(results, "scale", "--batch-sizes", "1,2", "--latency", "0")
    return results


@pytest.mark.timeout(120)
def test_step_benchmark_runs_every_variant(step: Path) -> None:
    """`bench step` at B=1 times native, compat (and TextGrad): 3B+1 or 4B+1 calls each."""
    for loss, calls in (("string", 4), ("judge", 5)):
        (row,) = _result(step, f"step_{loss}")["results"]["rows"]
        assert row["calls"] == calls
        assert row["compat_calls"] == calls
        assert row["asynctg_s"] > 0 and row["asynctg_peak_rss_mib"] > 0
        if HAS_TEXTGRAD and loss == "string":
            assert row["textgrad_calls"] == calls
            assert row["speedup"] is not None


def test_budget_benchmark_runs_told_and_learned(budget: Path) -> None:
    """`bench budget` runs both limits, told and not told, and answers every call."""
    rows = _result(budget, "budget")["results"]["rows"]
    assert [(r["scenario"], r["mode"]) for r in rows] == [
        ("rpm", "told"),
        ("rpm", "learned"),
        ("tpm", "told"),
        ("tpm", "learned"),
    ]
    assert all(r["ok"] == 12 and r["timeline"] for r in rows)
    assert all(r["request_p50_ms"] is not None for r in rows)


def test_overhead_benchmark_measures_every_client(overhead: Path) -> None:
    """`bench overhead` measures asynctg, openai-python, bare aiohttp and TextGrad's engine."""
    rows = _result(overhead, "overhead")["results"]["rows"]
    seen = {(r["loop"], r["key"]) for r in rows}
    expected = {("asyncio", c) for c in ("asynctg", "openai", "aiohttp")}
    if HAS_TEXTGRAD:
        expected.add(("threads", "textgrad"))
    assert seen == expected
    assert all(r["cpu_us_per_call"] > 0 and r["peak_rss_mib"] > 0 for r in rows)


def test_services_benchmark_reports_fairness_and_cpu(results: Path) -> None:
    """`bench services` at a tiny size reports the three ratios its targets are about."""
    args = ("--small-jobs", "3", "--big-calls", "24", "--slots", "4", "--latency", "5ms")
    _bench(results, "services", *args, "--fair-rounds", "1", "--rounds", "2", "--cpu-calls", "50")
    out = _result(results, "services")["results"]
    assert {"small_ratio", "big_ratio", "big_bound_s"} <= set(out["fairness"])
    assert out["fairness"]["big_bound_s"] == 0.045  # ceil((24 + 3 x 4) / 4) x 5 ms
    assert out["cpu_plain_us"] > 0 and out["cpu_job_us"] > 0


def test_caching_benchmark_matches_the_bill_and_saves_with_a_long_prompt(results: Path) -> None:
    """`bench caching --quick` prices every run as the simulator bills it, and the few-shot
    prompt's runs with the provider's cache cost less than without."""
    _bench(results, "caching", "--quick", "--train", "6", "--val", "3", "--test", "3")
    rows = _result(results, "caching")["results"]
    assert all(abs(r["cost_vs_bill_pct"]) <= 1 for r in rows)
    few = {r["variant"]: r for r in rows if r["api"] == "openai" and r["prompt"] == "few-shot"}
    assert few["prompt_cache=True"]["cached_share"] > 0
    assert few["prompt_cache=True"]["bill_usd"] < few["no cache"]["bill_usd"]


def test_scale_benchmark_runs_each_size_in_its_own_process(scale: Path) -> None:
    """`bench scale` reports calls, wall time and peak memory per batch size."""
    rows = _result(scale, "scale")["results"]["rows"]
    assert [(r["B"], r["calls"]) for r in rows] == [(1, 4), (2, 7)]
    assert all(r["peak_rss_mib"] > 0 for r in rows)


@pytest.mark.timeout(240)
def test_plots_and_report_are_drawn_from_the_results(
    step: Path, budget: Path, overhead: Path, scale: Path
) -> None:
    """`bench plots` draws every PNG and `bench report` renders the headline and tables."""
    report = _bench(step, "report")
    assert "### Headline" in report and "### scale" in report
    if not has_module("matplotlib"):
        pytest.skip("matplotlib is not installed (the test and bench extras install it)")
    _bench(step, "plots")
    for png in ("step_string", "step_judge", "budget_rate", "overhead_cpu", "scale"):
        assert (step / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
