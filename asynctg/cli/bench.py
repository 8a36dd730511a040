"""``asynctg bench``: load-test an endpoint with request streams or optimization-shaped bursts.

asynctg bench --base-url URL --model M                         # 200 streamed calls, 8 at once
asynctg bench --sim --concurrency 1,8,64,256 --slo-p99 2s      # a sweep; the knee
asynctg bench --base-url URL --model M --rate 1,5,20           # Poisson arrivals
asynctg bench --base-url URL --model M --workload step --batch-size 32 --rpm 500
asynctg bench --base-url URL --model M --workload optimize --steps 3 --report out/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from asynctg import fanout
from asynctg.errors import ConfigError
from asynctg.loadtest.stats import Sample

__all__ = ["add_parser", "run"]


def _duration(text: str) -> float:
    """ "2s", "500ms", "1.5" -> seconds."""
    raw = text.strip().lower()
    try:
        if raw.endswith("ms"):
            value = float(raw[:-2]) / 1000
        elif raw.endswith("s"):
            value = float(raw[:-1])
        else:
            value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 2s or 500ms") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def add_parser(
    sub: Any,
    *,
    endpoint_options: Callable[[argparse.ArgumentParser], None],
    positive_int: Callable[[str], int],
) -> None:
    p = sub.add_parser(
        "bench",
        help="load-test an endpoint: request streams, optimization steps, sweeps and the knee",
        description=(
            "Load-test any OpenAI-compatible endpoint the way prompt optimization loads it. "
            "Reports requests/s, input and output tokens/s, end-to-end latency, time to first "
            "token and inter-token latency (mean, p50, p90, p99), errors and 429s by kind; for "
            "step workloads the step time against its critical-path bound and the budget's "
            "floor; with --rpm/--tpm the share of that budget used."
        ),
    )
    g = p.add_argument_group("workload")
    g.add_argument(
        "--workload",
        choices=("calls", "step", "optimize"),
        default="calls",
        help="calls: a request stream (default); step: prompt-optimization steps at batch B; "
        "optimize: a short optimization run with test evaluations",
    )
    g.add_argument("--requests", type=positive_int, default=200, help="calls per level (200)")
    g.add_argument(
        "--concurrency",
        help="requests in flight (closed loop), or a list to sweep: 1,8,64,256 (default 8)",
    )
    g.add_argument("--rate", help="Poisson arrivals per second (open loop), or a list: 1,5,20")
    g.add_argument(
        "--prompt-tokens",
        default="256",
        help="prompt length: N, uniform:LOW,HIGH or normal:MEAN,SD tokens (256)",
    )
    g.add_argument(
        "--reply-tokens",
        help="reply cap (max_tokens) per call, same forms (default: --max-tokens, else 128)",
    )
    g.add_argument("--dataset", metavar="FILE", help="prompts from a JSONL or text file")
    g.add_argument("--no-stream", action="store_true", help="plain requests (no TTFT, no ITL)")
    g.add_argument("--batch-size", type=positive_int, default=16, help="step workloads: B (16)")
    g.add_argument("--steps", type=positive_int, default=3, help="step workloads: steps (3)")
    g.add_argument(
        "--test-size", type=positive_int, default=32, help="optimize: test questions (32)"
    )
    g.add_argument(
        "--slo-p99",
        type=_duration,
        help="latency objective for sweeps, e.g. 2s: the knee is the highest load meeting it",
    )
    g.add_argument(
        "--slo-metric",
        choices=("latency", "ttft"),
        default="latency",
        help="what --slo-p99 bounds: end-to-end latency (default) or time to first token",
    )
    g.add_argument(
        "--no-retries",
        action="store_true",
        help="count 429s and faults as failures instead of retrying them",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--sim-rpm",
        type=positive_int,
        help="with --sim: the simulated provider's requests-per-minute budget (429s past it)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    o.add_argument("--report", metavar="DIR", help="write report.json and report.html in DIR")
    o.add_argument("--quiet", action="store_true", help="no progress display")
    endpoint_options(p)


class _Progress:
    """One status line on a terminal, redrawn twice a second."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.enabled = not quiet and sys.stderr.isatty()
        self.label = ""
        self.total = 0
        self.done = 0
        self.failed = 0
        self.started = time.perf_counter()

    def level(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.failed = label, total, 0, 0
        self.started = time.perf_counter()
        if not self.enabled and label and not self.quiet:
            print(f"asynctg bench: {label}", file=sys.stderr)

    def sample(self, sample: Sample) -> None:
        self.done += 1
        self.failed += 0 if sample.ok else 1

    def draw(self) -> None:
        if not self.enabled:
            return
        rate = self.done / max(1e-9, time.perf_counter() - self.started)
        line = f"{self.label}: {self.done}/{self.total} done, {self.failed} failed, {rate:.1f}/s"
        print(f"\r\x1b[2K{line}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print("\r\x1b[2K", end="", file=sys.stderr, flush=True)

    async def ticker(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    """The command's entry (``asynctg.cli`` checks the endpoint options first)."""
    from asynctg.loadtest.workloads import Lengths, load_prompts, sweep_levels
    from asynctg.runtime import run as run_loop

    if args.concurrency and args.rate:
        raise ConfigError("--concurrency and --rate are two kinds of load: give one")
    levels = sweep_levels(args.rate, "rate") or sweep_levels(args.concurrency or "8", "concurrency")
    assert levels is not None
    options = {
        "prompt_tokens": Lengths.parse(args.prompt_tokens),
        "reply_tokens": Lengths.parse(args.reply_tokens or str(args.max_tokens or 128)),
        "prompts": load_prompts(args.dataset) if args.dataset else None,
    }
    if args.report:
        from asynctg.runs.report import prepare_report_dir

        prepare_report_dir(args.report)
    result = run_loop(_bench(args, levels, options))
    if args.report:
        from asynctg.loadtest.report import write_report

        _, page = write_report(args.report, result)
        if not args.json:
            print(f"report: {page}", file=sys.stderr)
    if args.json:
        print(json.dumps(_public(result), default=str))
    else:
        print(_summary_table(result))
    failed = sum(r.get("failed", 0) for r in result.get("levels", []))
    return 1 if failed and failed == sum(r.get("requests", 0) for r in result["levels"]) else 0


async def _bench(args: argparse.Namespace, levels: list[float], options: dict[str, Any]) -> Any:
    import contextlib

    from asynctg.cli.common import engine_options as endpoint_engine_options
    from asynctg.engine import RetryPolicy, get_engine
    from asynctg.engine.clock import LoopClock
    from asynctg.loadtest.recorder import RecordingTransport
    from asynctg.loadtest.workloads import budget_use, knee, run_calls, run_steps

    progress = _Progress(args.quiet)
    async with contextlib.AsyncExitStack() as stack:
        base_url, model, sim = await _endpoint(args, stack)
        recorder = RecordingTransport(clock=LoopClock().now)
        engine_options = endpoint_engine_options(args, base_url)
        engine_options.update(
            # the generator, not the engine's default cap, sets the load: a closed loop's
            # concurrency, or (open loop) whatever the arrivals pile up
            max_concurrency=max(args.max_concurrency, 4096 if args.rate else int(max(levels))),
            transport=recorder,  # (max_tokens: step workloads' replies; calls set their own)
        )
        if args.no_retries:
            engine_options["retry"] = RetryPolicy(max_attempts=1, max_rate_limit_attempts=1)
        engine = get_engine(model, **engine_options)
        stack.push_async_callback(engine.aclose)
        out: dict[str, Any] = {
            "endpoint": "built-in simulator" if sim else base_url,
            "model": model,
            "workload": args.workload,
            "stream": not args.no_stream,
            "budget": {"rpm": args.rpm, "tpm": args.tpm},
        }
        async with fanout.alongside(progress.ticker()):
            try:
                if args.workload == "calls":
                    rows = []
                    kind = "rate" if args.rate else "concurrency"
                    for level in levels:
                        progress.level(f"{kind} {level:g}", args.requests)
                        row = await run_calls(
                            engine,
                            requests=args.requests,
                            concurrency=int(level) if kind == "concurrency" else None,
                            rate=level if kind == "rate" else None,
                            stream=not args.no_stream,
                            seed=args.seed,
                            on_sample=progress.sample,
                            **options,
                        )
                        row["level"] = level
                        tokens = row["prompt_tokens"] + row["completion_tokens"]
                        row.update(
                            budget_use(
                                row["http_requests"], tokens, row["wall_s"], args.rpm, args.tpm
                            )
                        )
                        rows.append(row)
                    out["load_kind"] = kind
                    out["levels"] = rows
                    if args.slo_p99 is not None:
                        metric = "ttft_s" if args.slo_metric == "ttft" else "latency_s"
                        out["slo"] = {"p99_s": args.slo_p99, "metric": args.slo_metric}
                        out["knee"] = knee(rows, args.slo_p99, metric)
                else:
                    progress.level(f"{args.workload}, batch {args.batch_size}", 0)
                    step = await run_steps(
                        engine,
                        batch_size=args.batch_size,
                        steps=args.steps,
                        test_size=args.test_size if args.workload == "optimize" else 0,
                        seed=args.seed,
                        rpm=args.rpm,
                        tpm=args.tpm,
                    )
                    out["levels"] = []
                    out["step"] = step
            finally:
                progress.close()
        out["engine"] = engine.stats()
        if sim is not None:
            out["simulator"] = {k: v for k, v in sim.stats().items() if k != "timeline"}
    return out


async def _endpoint(args: argparse.Namespace, stack: Any) -> tuple[str | None, str, Any]:
    if getattr(args, "sim", False):
        from asynctg.sim import SimConfig, SimServer

        sim = await stack.enter_async_context(
            SimServer(
                SimConfig(latency=args.sim_latency, tokens_per_second=200.0, rpm=args.sim_rpm)
            )
        )
        return sim.base_url, args.model or "sim-1", sim
    from asynctg.cli.common import resolve_endpoint

    base_url, model = resolve_endpoint(args, use_sim=False)
    return base_url, model, None


def _public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON output: everything but the per-request samples."""
    levels = [{k: v for k, v in row.items() if k != "samples"} for row in result.get("levels", [])]
    return {**result, "levels": levels}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def _summary_table(result: dict[str, Any]) -> str:
    from asynctg.loadtest.report import knee_note, level_notes

    kind = result.get("load_kind", "concurrency")
    lines = [f"asynctg bench: {result['model']} at {result['endpoint']} ({result['workload']})"]
    if result["workload"] == "calls":
        header = (
            f"{'load':>10} {'req/s':>8} {'in tok/s':>9} {'out tok/s':>9} {'p50 ms':>7} "
            f"{'p90 ms':>7} {'p99 ms':>7} {'ttft p50':>8} {'ttft p99':>8} {'itl p50':>7} "
            f"{'429s':>5} {'failed':>6}"
        )
        lines.append(header)
        for row in result["levels"]:
            lat, ttft, itl = row["latency_s"], row["ttft_s"], row["itl_s"]
            lines.append(
                f"{row['level']:>10g} {row['requests_per_s']:>8.1f} "
                f"{row['input_tokens_per_s']:>9.0f} {row['output_tokens_per_s']:>9.0f} "
                f"{_ms(lat['p50']):>7} {_ms(lat['p90']):>7} {_ms(lat['p99']):>7} "
                f"{_ms(ttft['p50']):>8} {_ms(ttft['p99']):>8} {_ms(itl['p50']):>7} "
                f"{row['http_429']:>5} {row['failed']:>6}"
            )
            lines.extend(f"{'':>10} {note}" for note in level_notes(row, kind))
        knee = knee_note(result, kind)
        if knee is not None:
            lines.append(knee)
    else:
        step = result["step"]
        lines.append(
            f"  {step['steps']} steps at batch {step['batch_size']}: {step['calls']} calls, "
            f"{step['wall_s']:.2f} s, {step['rate_limited']} x 429, {step['retries']} retries"
        )
        if step.get("step_mean_s") is not None:
            lines.append(f"  step time (mean)     {step['step_mean_s']:.3f} s")
        if step.get("critical_path_bound_s") is not None:
            lines.append(
                f"  critical-path bound  {step['critical_path_bound_s']:.3f} s "
                f"(x{step.get('step_vs_bound', 0):.2f})"
            )
        if step.get("budget_floor_s") is not None:
            lines.append(
                f"  budget floor         {step['budget_floor_s']:.3f} s "
                f"(x{step.get('step_vs_floor', 0):.2f})"
            )
        for key, label in (("rpm_used", "rpm"), ("tpm_used", "tpm")):
            if key in step:
                lines.append(f"  {label} budget used      {step[key]:.0%}")
    return "\n".join(lines)
