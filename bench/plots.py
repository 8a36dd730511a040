"""PNG plots of the benchmark results, drawn from their JSON files (matplotlib, Agg backend).

    python -m bench plots            # redraw every plot whose JSON exists

matplotlib comes with the ``bench`` extra; without it, :func:`plot` says so and returns None,
so the benchmarks themselves never depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common

#: result name -> PNG name
FILES = {
    "step_string": "step_string.png",
    "step_judge": "step_judge.png",
    "budget": "budget_rate.png",
    "overhead": "overhead_cpu.png",
    "scale": "scale.png",
    "aggregation": "aggregation.png",
}
VARIANTS = {
    "asynctg": ("asynctg (native)", "o-"),
    "compat": ("asynctg.compat (unchanged script)", "s-"),
    "textgrad": ("TextGrad 0.1.8 (same script)", "^-"),
}


def available() -> bool:
    """Whether matplotlib is installed."""
    return common.has_module("matplotlib")


def plot(name: str) -> Path | None:
    """Draw ``RESULTS/<png>`` for result ``name``; None if matplotlib or the JSON is missing."""
    if not available():
        print(f"matplotlib is not installed (pip install -e '.[bench]'): no plot for {name}")
        return None
    data = common.read_result(name)
    if data is None or name not in FILES:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draw = _DRAWERS[name.split("_")[0]]
    fig = draw(plt, data)
    fig.text(0.99, 0.005, _footer(data), ha="right", va="bottom", fontsize=6, color="0.4")
    path = common.RESULTS / FILES[name]
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all() -> list[Path]:
    """Every plot whose JSON exists."""
    return [p for p in (plot(name) for name in FILES) if p is not None]


def _footer(data: dict[str, Any]) -> str:
    m = data["machine"]
    v = m["versions"]
    return (
        f"{m['date']}  {m['cpus']} CPUs {m.get('processor', '')}  Python {m['python']}  "
        f"asynctg {v.get('asynctg')}  textgrad {v.get('textgrad')}  openai {v.get('openai')}"
    )


def _plain_log_ticks(ax: Any) -> None:
    """Log axes labelled 0.5, 1, 2 rather than 5 x 10^-1."""
    from matplotlib.ticker import FuncFormatter

    def sparse(value: float, _pos: int) -> str:
        # minor ticks: label only 2x and 5x a power of ten, or they run into each other
        lead = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
        return f"{value:g}" if round(lead) in (2, 5) else ""

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        axis.set_minor_formatter(FuncFormatter(sparse))


def _step(plt: Any, data: dict[str, Any]) -> Any:
    res = data["results"]
    rows = res["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for key, (label, style) in VARIANTS.items():
        points = [(r["B"], r[f"{key}_s"]) for r in rows if r.get(f"{key}_s") is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, style, label=label)
    sizes = [r["B"] for r in rows]
    ax.plot(sizes, [r["bound_s"] for r in rows], "k--", label="bound: depth x latency")
    cap = data["settings"].get("max_concurrency", 64)
    ax.plot(sizes, [r["bound_c_s"] for r in rows], "k:", label=f"bound with {cap} in flight")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("step time (s)")
    loss = data["settings"]["loss"]
    ax.set_title(
        f"One prompt-optimization step ({loss} loss), {res['latency_s'] * 1000:.0f} ms per call"
    )
    ax.grid(True, which="both", alpha=0.3)
    _plain_log_ticks(ax)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _budget(plt: Any, data: dict[str, Any]) -> Any:
    rows = data["results"]["rows"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(7, 2.6 * len(scenarios) + 0.6))
    axes = [axes] if len(scenarios) == 1 else list(axes)
    for ax, scenario in zip(axes, scenarios, strict=True):
        column, unit = (1, "requests") if scenario == "rpm" else (2, "tokens")
        for row in (r for r in rows if r["scenario"] == scenario):
            per_second = row["limit"] / 60
            xs = [t[0] for t in row["timeline"]]
            ys = [t[column] / per_second for t in row["timeline"]]
            label = f"{row['mode']}: {row['answered_429']} x 429, utilisation {row['utilisation']}"
            ax.step(xs, ys, where="post", label=label)
        ax.axhline(1.0, color="k", linestyle="--", label="limit")
        ax.set_ylabel(f"{unit}/s ÷ limit")
        ax.set_title(f"{scenario} limit {row['limit']:,}/min: achieved rate each second")
        ax.set_ylim(0, 2.2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("seconds since the fan-out started (the first includes the burst)")
    fig.tight_layout()
    return fig


def _overhead(plt: Any, data: dict[str, Any]) -> Any:
    rows = data["results"]["rows"]
    fig, (cpu_ax, mem_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    labels = [f"{r['client']}\n({r['loop']})" for r in rows]
    colours = [_CLIENT_COLOURS.get(r["key"], "0.5") for r in rows]
    xs = range(len(rows))
    bars = cpu_ax.bar(xs, [r["cpu_us_per_call"] for r in rows], color=colours)
    cpu_ax.bar_label(bars, fmt="%.0f", fontsize=7)
    cpu_ax.set_yscale("log")
    _plain_log_ticks(cpu_ax)
    cpu_ax.set_ylabel("client CPU per call (µs, log scale)")
    cpu_ax.set_title("CPU per call, zero-latency server")
    bars = mem_ax.bar(xs, [r["peak_rss_mib"] for r in rows], color=colours)
    mem_ax.bar_label(bars, fmt="%.0f", fontsize=7)
    mem_ax.set_ylabel("peak RSS of the client process (MiB)")
    mem_ax.set_title("Peak memory (imports included)")
    for ax in (cpu_ax, mem_ax):
        ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


_CLIENT_COLOURS = {
    "asynctg": "tab:blue",
    "openai": "tab:orange",
    "aiohttp": "tab:green",
    "textgrad": "tab:red",
}


def _scale(plt: Any, data: dict[str, Any]) -> Any:
    res = data["results"]
    rows = res["rows"]
    sizes = [r["B"] for r in rows]
    fig, (time_ax, mem_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    time_ax.plot(sizes, [r["wall_s"] for r in rows], "o-", label="asynctg step")
    cap = res["max_concurrency"]
    time_ax.plot(sizes, [r["bound_s"] for r in rows], "k--", label=f"bound ({cap} in flight)")
    for r in rows:
        time_ax.annotate(
            f"{r['calls']} calls",
            (r["B"], r["wall_s"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(-14, 8),
        )
    time_ax.set_ylabel("step time (s)")
    time_ax.set_title(f"Step time vs B ({res['latency_s'] * 1000:.0f} ms per call)")
    mem_ax.plot(sizes, [r["peak_rss_mib"] for r in rows], "o-", label="peak RSS")
    mem_ax.plot(sizes, [r["step_rss_mib"] for r in rows], "s-", label="peak RSS - RSS before step")
    mem_ax.set_ylabel("MiB")
    mem_ax.set_title("Memory of the step's process")
    for ax in (time_ax, mem_ax):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _aggregation(plt: Any, data: dict[str, Any]) -> Any:
    res = data["results"]
    rows = res["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for strategy in sorted({r["strategy"] for r in rows}):
        mine = [r for r in rows if r["strategy"] == strategy]
        ran = [r for r in mine if r["ran"] != "refused"]
        xs = [r["B"] for r in ran]
        axes[0].plot(xs, [r["step_s"] for r in ran], "o-", label=strategy)
        axes[1].plot(xs, [r["calls"] for r in ran], "o-", label=strategy)
        refused = len(ran) < len(mine)
        axes[2].plot(
            [r["B"] for r in mine],
            [r["optimizer_prompt_tokens"] for r in mine],
            "o-",
            label=f"{strategy} (refused, unsent, past the window)" if refused else strategy,
        )
    tree = [r for r in rows if r["ran"] == "tree"]
    axes[0].plot([r["B"] for r in tree], [r["bound_s"] for r in tree], "k--", label="tree bound")
    axes[2].axhline(res["context_window"], color="red", ls="--", label="context window")
    titles = ("step time (s)", "calls per step", "optimizer prompt (tokens)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"One step on the simulator: {res['latency_s'] * 1000:.0f} ms per call, "
        f"{res['context_window']}-token window, ~{res['feedback_tokens']}-token feedback, "
        f"{res['max_concurrency']} in flight"
    )
    fig.tight_layout()
    return fig


_DRAWERS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "step": _step,
    "budget": _budget,
    "overhead": _overhead,
    "scale": _scale,
    "aggregation": _aggregation,
}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench plots``: redraw every plot; 1 if matplotlib is missing."""
    if not available():
        print("matplotlib is not installed: pip install -e '.[bench]'")
        return 1
    for path in plot_all():
        print(f"wrote {path}")
    return 0
