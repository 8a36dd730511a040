"""Step latency vs batch size: the paper's prompt-optimization step, three ways, one simulator.

    python -m bench step [--quick] [--batch-sizes 1,4,16,32,64,256] [--latency 100ms]
                         [--losses string,judge] [--textgrad-max-batch 64]

One step = B forward calls, the backward pass and one optimizer call: 3B+1 calls with the
string-match loss, 4B+1 with an LLM judge as the loss. Its critical path is 4 calls deep with
the string loss (forward, two backward levels, optimizer) and 5 with the judge, so at a fixed
latency L no schedule beats the bound depth x L. An engine that caps requests in flight at C
also cannot beat calls x L / C; ``bound_c_s`` is the larger of the two.

Each variant runs in its own process against the same simulator (loopback HTTP):

- ``asynctg``: the step written with asynctg's native async API (``bench/native_step.py``);
- ``compat``: ``bench/compat_script.py``, a TextGrad script, unchanged, on ``asynctg.compat``;
- ``textgrad``: the same script on TextGrad 0.1.8 exactly as installed from PyPI.

All three get the same generated questions. The step time is the script's own forward +
backward + optimizer time (no interpreter start-up or imports). TextGrad runs only for batch
sizes up to ``--textgrad-max-batch`` (it is sequential: about 0.3 s x B at 100 ms); nothing is
extrapolated beyond what ran.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Child,
    has_module,
    python_child,
    ratio,
    run_child,
    save_plot,
    sim_reset,
    sim_stats,
    simulator,
    table,
    textgrad_env,
    write_result,
)
from bench.questions import write_bbh_file

DEPTH = {"string": 4, "judge": 5}
SIZES = "1,4,16,32,64,256"
SCRIPT = ROOT / "bench" / "compat_script.py"


def depth_bound(loss: str, latency: float) -> float:
    """The critical-path bound: depth x latency."""
    return DEPTH[loss] * latency


def concurrency_bound(loss: str, latency: float, calls: int, concurrency: int) -> float:
    """The larger of the depth bound and the work bound calls x L / C."""
    return max(depth_bound(loss, latency), math.ceil(calls / concurrency) * latency)


def run_native(url: str, batch: int, loss: str, concurrency: int, *extra: str) -> dict[str, Any]:
    """asynctg's native step in a fresh process (``extra``: more native_step options)."""
    cmd = python_child("-m", "bench.native_step", "--base-url", url)
    cmd += ["--batch-size", str(batch), "--loss", loss, "--max-concurrency", str(concurrency)]
    return run_child([*cmd, *extra]).json_line()


def run_script(url: str, module: str, batch: int, loss: str, scratch: Path) -> dict[str, Any]:
    """``compat_script.py`` on ``module`` (textgrad or asynctg.compat): one step of ``batch``."""
    data = write_bbh_file(scratch / "questions.json", batch)
    cmd = python_child(str(SCRIPT), "--module", module, "--loss", loss, "--data", str(data))
    cmd += ["--batch-size", str(batch), "--train-size", str(batch), "--steps", "1"]
    cmd += ["--val-size", "0", "--no-shuffle"]
    child: Child = run_child(cmd, env=textgrad_env(scratch, url), cwd=scratch)
    out = child.json_line()
    (step,) = out["per_step"]
    return {**step, "step_s": step["total"], "peak_rss_kib": out.get("peak_rss_kib")}


def _variant(url: str, name: str, batch: int, loss: str, concurrency: int) -> dict[str, Any]:
    sim_reset(url)
    if name == "asynctg":
        result = run_native(url, batch, loss, concurrency)
    else:
        module = "textgrad" if name == "textgrad" else "asynctg.compat"
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            result = run_script(url, module, batch, loss, Path(tmp))
    stats = sim_stats(url)
    result["sim_requests"] = stats["requests"]
    result["sim_ok"] = stats["ok"]
    return result


def _row(
    loss: str, batch: int, lat: float, concurrency: int, runs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    bound = depth_bound(loss, lat)
    native = runs["asynctg"]
    row: dict[str, Any] = {
        "loss": loss,
        "B": batch,
        "calls": native["sim_requests"],
        "bound_s": round(bound, 3),
        "bound_c_s": round(concurrency_bound(loss, lat, native["sim_requests"], concurrency), 3),
    }
    for name, run in runs.items():
        row[f"{name}_s"] = round(run["step_s"], 3)
        row[f"{name}_x_bound"] = ratio(run["step_s"], bound)
        row[f"{name}_calls"] = run["sim_requests"]
        if run.get("peak_rss_kib"):
            row[f"{name}_peak_rss_mib"] = round(run["peak_rss_kib"] / 1024, 1)
    tg = runs.get("textgrad")
    if tg is not None:
        row["speedup"] = round(tg["step_s"] / native["step_s"], 1)
        if "compat" in runs:
            row["compat_speedup"] = round(tg["step_s"] / runs["compat"]["step_s"], 2)
    row["runs"] = runs
    return row


def run(
    sizes: list[int], latency: str, loss: str, tg_max: int, concurrency: int, compat: bool
) -> dict[str, Any]:
    """Every variant at every size for one loss; one simulator for all of them."""
    from asynctg.sim import parse_latency

    lat = float(parse_latency(latency).mean())
    with_textgrad = has_module("textgrad")
    rows = []
    with simulator("--latency", latency) as url:
        for batch in sizes:
            names = ["asynctg"]
            if compat:
                names.append("compat")
            if with_textgrad and batch <= tg_max:
                names.append("textgrad")
            runs = {name: _variant(url, name, batch, loss, concurrency) for name in names}
            answered = {name: run["sim_ok"] for name, run in runs.items()}
            if len(set(answered.values())) > 1:
                print(f"  warning: B={batch}: the variants made different calls: {answered}")
            rows.append(_row(loss, batch, lat, concurrency, runs))
            print(
                f"  {loss} B={batch}: "
                + ", ".join(f"{n} {r['step_s']:.2f}s" for n, r in runs.items()),
                flush=True,
            )
    return {
        "rows": rows,
        "latency_s": lat,
        "depth": DEPTH[loss],
        "textgrad_installed": with_textgrad,
        "textgrad_max_batch": tg_max,
    }


COLUMNS = [
    "B",
    "calls",
    "bound_s",
    "bound_c_s",
    "asynctg_s",
    "asynctg_x_bound",
    "compat_s",
    "compat_x_bound",
    "textgrad_s",
    "textgrad_x_bound",
    "speedup",
    "compat_speedup",
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench step")
    parser.add_argument("--quick", action="store_true", help="TextGrad only up to B=32")
    parser.add_argument("--batch-sizes", default=SIZES, help="comma list")
    parser.add_argument("--latency", default="100ms", help="simulated latency of every call")
    parser.add_argument("--losses", default="string,judge", help="comma list: string,judge")
    parser.add_argument("--textgrad-max-batch", type=int, default=None, help="default 64 (32)")
    parser.add_argument("--max-concurrency", type=int, default=64, help="native engine's cap")
    parser.add_argument("--no-compat", action="store_true", help="skip asynctg.compat")
    args = parser.parse_args(argv)
    if args.textgrad_max_batch is None:
        args.textgrad_max_batch = 32 if args.quick else 64
    sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    outs = {}
    for loss in [x for x in args.losses.split(",") if x]:
        out = run(
            sizes,
            args.latency,
            loss,
            args.textgrad_max_batch,
            args.max_concurrency,
            not args.no_compat,
        )
        print(
            f"Step latency: the prompt-optimization step ({loss} loss), simulated latency "
            f"{args.latency}, bound = {out['depth']} x latency; speedup = TextGrad / asynctg"
        )
        print(table(out["rows"], [c for c in COLUMNS if any(c in r for r in out["rows"])]))
        settings = {**vars(args), "loss": loss, "sizes": sizes}
        print(f"wrote {write_result(f'step_{loss}', settings, out)}")
        save_plot(f"step_{loss}")
        outs[loss] = out
    return outs
