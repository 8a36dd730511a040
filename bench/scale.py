"""Scale: calls, wall time, CPU and peak memory of one native step as the batch grows.

    python -m bench scale [--quick] [--batch-sizes 1,4,16,64,256,1024] [--latency 100ms]
                          [--loss string] [--max-concurrency 64]

Each batch size runs asynctg's native step (``bench/native_step.py``) in a fresh process
against one simulator over loopback HTTP, so one run's memory never inflates the next. Peak
RSS is the child's own high-water mark (``VmHWM``); ``rss_before`` is its resident set just
before the step (interpreter, imports, engine), so ``peak - before`` is what the step
itself cost. The bound is the larger of depth x latency and calls x latency / max_concurrency:
with the engine's default cap of 64 requests in flight, big batches are bound by the work, not
the depth.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import ratio, save_plot, sim_reset, sim_stats, simulator, table, write_result
from bench.step import concurrency_bound, depth_bound, run_native

SIZES = "1,4,16,64,256,1024"


def run(sizes: list[int], latency: str, loss: str, concurrency: int) -> dict[str, Any]:
    """One native step per batch size, each in its own process."""
    from asynctg.sim import parse_latency

    lat = float(parse_latency(latency).mean())
    rows = []
    with simulator("--latency", latency) as url:
        for batch in sizes:
            sim_reset(url)
            out = run_native(url, batch, loss, concurrency)
            calls = sim_stats(url)["requests"]
            bound = concurrency_bound(loss, lat, calls, concurrency)
            peak = out["peak_rss_kib"] / 1024
            before = (out["rss_before_kib"] or 0) / 1024
            rows.append(
                {
                    "B": batch,
                    "calls": calls,
                    "wall_s": round(out["step_s"], 3),
                    "bound_s": round(bound, 3),
                    "depth_bound_s": round(depth_bound(loss, lat), 3),
                    "x_bound": ratio(out["step_s"], bound),
                    "cpu_s": round(out["step_cpu_s"], 3),
                    "cpu_us_per_call": round(out["step_cpu_s"] / calls * 1e6),
                    "rss_before_mib": round(before, 1),
                    "peak_rss_mib": round(peak, 1),
                    "step_rss_mib": round(peak - before, 1),
                    "native": out,
                }
            )
            print(f"  B={batch}: {calls} calls, {out['step_s']:.2f}s, {peak:.0f} MiB", flush=True)
    return {"rows": rows, "latency_s": lat, "loss": loss, "max_concurrency": concurrency}


COLUMNS = [
    "B",
    "calls",
    "wall_s",
    "bound_s",
    "x_bound",
    "cpu_s",
    "cpu_us_per_call",
    "peak_rss_mib",
    "step_rss_mib",
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--quick", action="store_true", help="same sizes (they are fast)")
    parser.add_argument("--batch-sizes", default=SIZES, help="comma list")
    parser.add_argument("--latency", default="100ms")
    parser.add_argument("--loss", choices=["string", "judge"], default="string")
    parser.add_argument("--max-concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    out = run(sizes, args.latency, args.loss, args.max_concurrency)
    print(
        f"Scale: one native step ({args.loss} loss) per batch size, simulated latency "
        f"{args.latency}, at most {args.max_concurrency} requests in flight; each in a fresh "
        "process"
    )
    print(table(out["rows"], COLUMNS))
    print(f"wrote {write_result('scale', {**vars(args), 'sizes': sizes}, out)}")
    save_plot("scale")
    return out
