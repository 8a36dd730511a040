"""Running a long command (``optimize``, ``solve``, ``code``, ``molecule``, ``radiotherapy``):
plan it (every check before anything is written), estimate it, run its loop with engines,
checkpoint, progress and report, and print its summary. The command's family
(``asynctg.cli.prompt``, ``asynctg.cli.science``) supplies its task, loop and lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asynctg.cli import prompt, science
from asynctg.cli.common import (
    REPLAY_URL,
    endpoint_url,
    engines,
    live,
    resolve_endpoint,
)
from asynctg.errors import AsyncTGError, ConfigError

__all__ = ["Plan", "make_plan", "run_command"]


@dataclass
class Plan:
    """Everything a long-running command needs, checked before anything is written."""

    command: str
    task: Any
    loop_config: Any
    model: str
    optimizer_model: str
    base_url: str | None
    use_sim: bool
    sim_latency: str
    fingerprint: dict[str, Any]
    checkpoint: Any = None
    report: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


def make_plan(args: argparse.Namespace) -> Plan:
    """Check the command's arguments and settings, and open nothing yet: a bad folder or
    input exits 2 before any call, with every file as it was."""
    from asynctg.runs.checkpoint import Checkpoint
    from asynctg.runs.loop import Budget, unpriced_error
    from asynctg.runs.report import prepare_report_dir

    command = args.command
    family = science if command in science.COMMANDS else prompt
    family.check_task(args)
    if args.resume and not args.checkpoint:
        raise ConfigError("--resume needs --checkpoint DIR (the folder of the run to continue)")
    if args.replay and args.checkpoint:
        raise ConfigError("--replay DIR reads another run's journal: drop --checkpoint")
    budget = Budget(max_cost=args.max_cost, max_calls=args.max_calls)
    planned = family.plan_loop(args, budget)
    task, loop_config = planned.task, planned.config
    use_sim = bool(getattr(args, "sim", False)) and not args.replay
    base_url: str | None
    if args.replay:  # nothing is sent: no endpoint needed
        base_url = REPLAY_URL
        model = args.model or os.environ.get("ASYNCTG_MODEL") or "sim-1"
    else:
        base_url, model = resolve_endpoint(args, use_sim=use_sim)
    optimizer_model = getattr(args, "optimizer_model", None) or model
    if args.max_cost is not None and args.price is None:
        from asynctg.engine.usage import price_for

        unpriced = [m for m in dict.fromkeys((model, optimizer_model)) if price_for(m) is None]
        if unpriced:
            raise unpriced_error(unpriced)
    fingerprint = {
        "command": command,
        "task": task.name,
        "data": task.source,
        "sizes": task.sizes(),
        "evaluation": getattr(task, "evaluation", None),
        "model": model,
        "optimizer_model": optimizer_model,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        **loop_config.fingerprint_fields(),
        **planned.fingerprint,
    }
    if getattr(args, "optimizer", "tgd") == "gepa":  # a TGD run's fingerprint stays as it was
        fingerprint.update(optimizer="gepa", parallel_proposals=args.parallel_proposals)
    plan = Plan(
        command=command,
        task=task,
        loop_config=loop_config,
        model=model,
        optimizer_model=optimizer_model,
        base_url=base_url,
        use_sim=use_sim,
        sim_latency=getattr(args, "sim_latency", "20ms"),
        fingerprint=fingerprint,
    )
    # Checked now, before any call and before anything is written: a bad folder exits 2 with
    # every file as it was.
    if args.report:
        plan.report = prepare_report_dir(args.report)
    if args.checkpoint:
        plan.checkpoint = Checkpoint(args.checkpoint, fingerprint, resume=args.resume)
    if args.replay:
        # Reading it checks it is a run of this very configuration (ConfigError otherwise).
        Checkpoint(args.replay, fingerprint, resume=True)
        if not (Path(args.replay) / "journal.bin").exists():
            raise ConfigError(f"--replay {args.replay}: no journal.bin there to replay")
    plan.meta = {
        "task": task.name,
        "data": task.source,
        "model": model,
        "optimizer_model": optimizer_model,
        "endpoint": "built-in simulator" if use_sim else (base_url or "OpenAI"),
        **{k: v for k, v in fingerprint.items() if k not in ("command", "task", "data")},
    }
    plan.meta.update(planned.meta)
    if fingerprint.get("optimizer") == "gepa":  # only extends a run, like --epochs
        plan.meta["max_metric_calls"] = args.max_metric_calls
    return plan


def run_command(args: argparse.Namespace) -> int:
    from asynctg.runtime import run

    plan = make_plan(args)
    # no dry run of a science loop: it would dock molecules and plan doses
    if args.command not in science.COMMANDS and (
        args.estimate or (args.max_cost is not None and not args.replay)
    ):
        estimate = run(_estimate(args, plan))
        if args.estimate:
            print(json.dumps(estimate.to_json()) if args.json else estimate.line())
            return 0
        if estimate.low_usd is not None and args.max_cost < estimate.low_usd:
            # A warning, not a refusal: a run stopped by its cap ends like a finished one
            # (checkpoint, report, --json) and --resume with a larger cap continues it.
            print(
                f"asynctg: warning: --max-cost ${args.max_cost:g} is below the low end of this "
                f"run's estimate ({estimate.line()}): the run will stop at the cap before it "
                "finishes; --resume with a larger --max-cost continues it",
                file=sys.stderr,
            )
    if getattr(args, "otel", False):
        from asynctg import telemetry

        telemetry.configure_otlp(f"asynctg-{args.command}")
    return run(_execute(args, plan))


async def _loop(
    plan: Plan,
    engine: Any,
    backward: Any,
    checkpoint: Any,
    progress: Any,
    args: argparse.Namespace | None = None,
) -> Any:
    if plan.command in science.COMMANDS:
        assert args is not None  # never estimated (a dry run would dock and plan for real)
        return await science.run_loop(
            args, plan.task, plan.loop_config, engine, checkpoint, progress
        )
    return await prompt.run_loop(plan, engine, backward, checkpoint, progress)


async def _estimate(args: argparse.Namespace, plan: Plan) -> Any:
    """The run's dry run on a local simulator (asynctg.runs.estimate), calibrated on the
    checkpoint's journal when one holds real replies."""
    import dataclasses
    import shutil
    import tempfile

    from asynctg.apps import Budget, Progress
    from asynctg.engine import get_engine
    from asynctg.runs.checkpoint import Checkpoint
    from asynctg.runs.estimate import dry_run

    def make(model: str, base_url: str) -> Any:
        extra = {"price": args.price} if args.price is not None else {}
        return get_engine(
            model,
            base_url=base_url,
            api_key="estimate",
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            max_concurrency=256,
            **extra,
        )

    # The whole run is estimated: its caps would stop the dry run where they stop the real one.
    unbounded = dataclasses.replace(
        plan, loop_config=dataclasses.replace(plan.loop_config, budget=Budget())
    )

    async def run_loop(engines: dict[str, Any]) -> Any:
        engine = engines[plan.model]
        backward = engines[plan.optimizer_model]
        quiet = Progress(lambda: {}, quiet=True)
        saved = plan.checkpoint
        if saved is None or not saved.journal_path.exists():
            return await _loop(unbounded, engine, backward, None, quiet)
        # A resumed run resumes here too, on a copy of its checkpoint (the real one is not
        # touched): finished steps are skipped and the journal's calls are free hits.
        with tempfile.TemporaryDirectory(prefix="asynctg-estimate-") as tmp:
            copy = Path(tmp) / "run"
            await asyncio.to_thread(shutil.copytree, saved.path, copy)
            checkpoint = Checkpoint(copy, saved.config, resume=True)
            checkpoint.open()
            try:
                return await _loop(unbounded, engine, backward, checkpoint, quiet)
            finally:
                checkpoint.close()

    prices = {m: args.price for m in (plan.model, plan.optimizer_model)} if args.price else None
    first = await dry_run(make, [plan.model, plan.optimizer_model], run_loop, prices=prices)
    scale = _journal_reply_scale(plan, first)
    if scale is None:
        return first
    return await dry_run(
        make, [plan.model, plan.optimizer_model], run_loop, prices=prices, reply_scale=scale
    )


def _journal_reply_scale(plan: Plan, first: Any) -> float | None:
    """Mean real reply length in the checkpoint's journal / the dry run's, if known."""
    checkpoint = plan.checkpoint
    sent = first.calls - first.journal_hits
    if checkpoint is None or checkpoint.state is None or not sent:
        return None
    from asynctg.engine.cache import ResponseCache

    journal = ResponseCache(checkpoint.path / "journal.bin")
    try:
        lengths = [r.usage.completion_tokens for k in journal.keys() if (r := journal.get(k))]
    finally:
        journal.close()
    if not lengths or not first.completion_tokens:
        return None
    return float((sum(lengths) / len(lengths)) / (first.completion_tokens / sent))


async def _execute(args: argparse.Namespace, plan: Plan) -> int:
    from asynctg.apps import Meter, Progress
    from asynctg.apps.report import write_report

    checkpoint = plan.checkpoint
    async with contextlib.AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(endpoint_url(plan.use_sim, plan.sim_latency, 0))
        base_url = sim_url or plan.base_url
        engine, backward, _ = engines(args, base_url, plan.model, plan.optimizer_model)
        stack.push_async_callback(engine.aclose)
        if backward is not engine:
            stack.push_async_callback(backward.aclose)
        if checkpoint is not None:
            checkpoint.open()
            stack.callback(checkpoint.close)
        progress = Progress(Meter([engine, backward]).session, quiet=args.quiet)
        try:
            async with live(progress):
                result = await _loop(plan, engine, backward, checkpoint, progress, args)
        except AsyncTGError:
            if checkpoint is not None:
                print(
                    f"asynctg: the run failed; {checkpoint.path} holds its last completed step: "
                    "rerun with --resume to continue",
                    file=sys.stderr,
                )
            raise
    data = result.to_json()
    if plan.report is not None:
        _, html_path = write_report(plan.report, plan.command, data, plan.meta)
        if not args.json:
            print(f"report: {html_path}", file=sys.stderr)
    if args.json:
        print(json.dumps({"command": plan.command, "meta": plan.meta, **data}, default=str))
    else:
        _print_result(plan, data)
    return 1 if data.get("failed") else 0


def _print_result(plan: Plan, data: dict[str, Any]) -> None:
    usage = data["usage"]
    lines = [f"asynctg {plan.command}: {plan.task.name} — {data['status']}"]
    if data.get("stop_reason"):
        lines[0] += f" (--{data['stop_reason'].replace('_', '-')} reached; --resume continues)"
    if plan.command in science.COMMANDS:
        science.print_result(data, lines)
    else:
        prompt.print_result(plan.command, data, lines)
    from asynctg.runs.progress import cached_share, format_tiers

    cost = usage.get("cost_usd")
    share = cached_share(usage)
    lines.append(
        f"  usage            {usage['provider_calls']} calls, {usage['total_tokens']} tokens"
        + (f" ({share:.0%} of prompt cached)" if share else "")
        + ", "
        + (f"${cost:.4f}" if cost is not None else "cost n/a")
        + f", {usage['rate_limited']} x 429, {usage['seconds']:.1f} s"
    )
    if tiers := format_tiers(usage, against=True):
        lines.append(f"  tiers            {tiers}")
    print("\n".join(lines))
