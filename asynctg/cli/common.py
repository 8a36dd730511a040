"""What every command line shares: argument types, the endpoint and run options, the parser
with "did you mean", the endpoint and engines a command talks to, and output helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from asynctg.engine.tiers import DEFAULT_BATCH_MIN, DEFAULT_FLEX_DEADLINE
from asynctg.errors import ConfigError
from asynctg.output.text import printable

if TYPE_CHECKING:
    from asynctg.engine.usage import Price

__all__ = [
    "REPLAY_URL",
    "Parser",
    "PlannedLoop",
    "count",
    "endpoint_options",
    "endpoint_url",
    "engine_options",
    "engines",
    "int_at_least",
    "live",
    "one_line",
    "positive_float",
    "positive_int",
    "resolve_endpoint",
    "run_options",
]


@dataclass
class PlannedLoop:
    """What a command family plans for a run: the task, the loop's settings, what else the
    run's fingerprint holds (a changed value refuses ``--resume``) and what the report shows."""

    task: Any
    config: Any
    fingerprint: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)


count = int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"expected a temperature within [0, 2], got {value}")
    return value


def _price(text: str) -> Price:
    try:
        numbers = [float(x) if x.strip() else None for x in text.split(",")]
        if not 2 <= len(numbers) <= 4:
            raise ValueError(text)
        prompt, completion, *cache = numbers
        if prompt is None or completion is None:
            raise ValueError(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected PROMPT,COMPLETION[,CACHED_INPUT[,CACHE_WRITE]] dollars per million tokens, "
            f"e.g. 0.15,0.6 or 2.5,10,1.25; got {text!r}"
        ) from None
    from asynctg.engine.usage import Price

    try:
        return Price(prompt, completion, *cache)  # the engine's own rule: finite and >= 0
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def endpoint_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    g = p.add_argument_group("endpoint")
    g.add_argument(
        "--base-url",
        help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL; the OpenAI API if only "
        "$OPENAI_API_KEY is set)"
        + ("; without it the demo runs on the built-in simulator" if demo else ""),
    )
    g.add_argument("--model", help="model answering the task (default: $ASYNCTG_MODEL)")
    g.add_argument(
        "--api-key-env",
        metavar="NAME",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key (default: OPENAI_API_KEY); the key "
        "itself is never taken on the command line, where other users could read it",
    )
    if not demo:
        g.add_argument(
            "--sim",
            action="store_true",
            help="run against the built-in simulator, started in this process",
        )
        g.add_argument(
            "--sim-latency", default="20ms", help="the simulator's latency with --sim (20ms)"
        )
    g.add_argument("--rpm", type=positive_float, help="requests per minute allowed, per model")
    g.add_argument("--tpm", type=positive_float, help="tokens per minute allowed, per model")
    g.add_argument(
        "--max-concurrency", type=positive_int, default=64, help="requests in flight (64)"
    )
    g.add_argument("--temperature", type=_temperature, default=0.0, help="sampling temperature (0)")
    g.add_argument(
        "--max-tokens",
        type=positive_int,
        help="cap on each reply's length in tokens (default: the provider's)",
    )
    g.add_argument(
        "--price",
        type=_price,
        help="PROMPT,COMPLETION[,CACHED_INPUT[,CACHE_WRITE]] dollars per million tokens, for "
        "models not in the price table (cached input and cache write default to PROMPT)",
    )
    g.add_argument(
        "--redis-url",
        help="share rpm/tpm, 429 cool-downs and --max-cost with every process using this "
        "Redis (redis://host:port/db; needs the redis extra)",
    )
    g.add_argument(
        "--context-window",
        type=int_at_least(16),
        help="the model's context window in tokens (default: the model table, else learned "
        "from the provider's first context-length error)",
    )


def tier_options(p: argparse.ArgumentParser) -> None:
    """``--eval-tier``, ``--batch-min``, ``--flex-deadline``: the service tier of the calls off
    the optimization path (``asynctg.engine.tiers``)."""
    g = p.add_argument_group("service tiers")
    g.add_argument(
        "--eval-tier",
        choices=("standard", "flex", "batch"),
        default="standard",
        help="tier of evaluation calls (validation and test scoring, baselines): flex and batch "
        "cost half and are slower; training calls stay standard (default: standard)",
    )
    g.add_argument(
        "--batch-min",
        type=positive_int,
        default=DEFAULT_BATCH_MIN,
        help=f"with --eval-tier batch, the fewest calls of a fan-out sent as one provider batch; "
        f"smaller ones go at standard ({DEFAULT_BATCH_MIN})",
    )
    g.add_argument(
        "--flex-deadline",
        type=positive_float,
        default=DEFAULT_FLEX_DEADLINE,
        help="seconds a flex call retries 'resource unavailable' before it is sent at standard "
        f"({DEFAULT_FLEX_DEADLINE:g})",
    )


def run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=42, help="seed of shuffles (42)")
    g.add_argument(
        "--data-seed", type=int, default=0, help="seed of generated data and option order (0)"
    )
    g.add_argument("--checkpoint", metavar="DIR", help="save the run after every step in DIR")
    g.add_argument(
        "--resume", action="store_true", help="continue the run saved in --checkpoint DIR"
    )
    g.add_argument(
        "--replay",
        metavar="DIR",
        help="run again from the journal of a finished run's --checkpoint DIR, sending nothing "
        "(same arguments as that run; a request it does not hold is an error)",
    )
    g.add_argument("--report", metavar="DIR", help="write report.json and report.html in DIR")
    g.add_argument(
        "--max-cost", type=positive_float, help="stop cleanly once this many dollars are spent"
    )
    g.add_argument(
        "--max-calls", type=positive_int, help="stop cleanly after this many provider calls"
    )
    g.add_argument(
        "--estimate",
        action="store_true",
        help="print the calls, tokens and dollars the run will spend (a dry run on a local "
        "simulator; nothing is sent) and exit",
    )
    g.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces and metrics over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT; "
        "needs opentelemetry-sdk and opentelemetry-exporter-otlp)",
    )
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    g.add_argument("--quiet", action="store_true", help="no progress display")


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for mistyped options (as Python 3.14's suggest_on_error)."""

    def error(self, message: str) -> NoReturn:
        import difflib
        import re

        wrong = re.findall(r"unrecognized arguments: (.*)", message)
        if wrong:
            parsers: dict[str, argparse.ArgumentParser] = {"": self}
            for action in self._actions:  # the subcommands' options too
                if isinstance(action, argparse._SubParsersAction):
                    parsers.update(action.choices)
            owners: dict[str, list[str]] = {}
            for name, p in parsers.items():
                for a in p._actions:
                    for o in a.option_strings:
                        owners.setdefault(o, []).append(name)
            for word in wrong[0].split():
                if not word.startswith("--"):
                    continue
                option = word.split("=")[0]
                if option in owners:
                    # a real option of other commands: "did you mean" itself would be absurd
                    names = ", ".join(f"asynctg {n}" for n in owners[option] if n)
                    message += f" (this command has no {option}; {names} take it)"
                    continue
                close = difflib.get_close_matches(option, sorted(owners), n=1)
                if close:
                    message += f" (did you mean {close[0]}?)"
        super().error(message)


#: Where a replayed run's engines "send": never contacted (every answer is in the journal).
REPLAY_URL = "http://replay.invalid/v1"


def resolve_endpoint(args: argparse.Namespace, *, use_sim: bool) -> tuple[str | None, str]:
    """(base URL, model) from the endpoint flags and the environment; ConfigError (exit 2)
    saying what to pass when there is none."""
    if use_sim:
        return None, args.model or "sim-1"
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or None
    key_env = getattr(args, "api_key_env", "OPENAI_API_KEY") or "OPENAI_API_KEY"
    if base_url is None and not os.environ.get(key_env):
        raise ConfigError(
            "no endpoint: pass --base-url URL (any OpenAI-compatible server) or set "
            "OPENAI_BASE_URL or OPENAI_API_KEY; or add --sim to try it on the built-in simulator"
        )
    model = args.model or os.environ.get("ASYNCTG_MODEL")
    if not model:
        raise ConfigError("pass --model NAME (or set ASYNCTG_MODEL)")
    return base_url, model


@contextlib.asynccontextmanager
async def endpoint_url(plan_sim: bool, latency: str, seed: int) -> AsyncIterator[str | None]:
    if not plan_sim:
        yield None
        return
    from asynctg.sim import SimConfig, SimServer

    # batches end at their first look: a demo run does not wait a minute per evaluation
    config = SimConfig(latency=latency, seed=seed, batch_completion_seconds=0.0)
    async with SimServer(config) as server:
        yield server.base_url


def engine_options(args: argparse.Namespace, base_url: str | None) -> dict[str, Any]:
    """``get_engine`` options from the endpoint flags (``endpoint_options``); the API key is
    read from the environment variable ``--api-key-env`` names."""
    options: dict[str, Any] = {
        "base_url": base_url,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "max_concurrency": args.max_concurrency,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
    }
    if args.price is not None:
        options["price"] = args.price
    key_env = getattr(args, "api_key_env", "OPENAI_API_KEY") or "OPENAI_API_KEY"
    if os.environ.get(key_env):
        options["api_key"] = os.environ[key_env]
    if getattr(args, "context_window", None) is not None:
        options["context_window"] = args.context_window
    if getattr(args, "redis_url", None):
        options["redis_url"] = args.redis_url  # share rpm/tpm with every process on it
    if getattr(args, "batch_min", None) is not None:
        options["batch_min"] = args.batch_min
    if getattr(args, "flex_deadline", None) is not None:
        options["flex_deadline"] = args.flex_deadline
    return options


def engines(
    args: argparse.Namespace, base_url: str | None, model: str, optimizer_model: str
) -> tuple[Any, Any, list[Any]]:
    from asynctg.engine import get_engine
    from asynctg.loadtest.recorder import RecordingTransport

    transports = [RecordingTransport()]
    options = engine_options(args, base_url)
    if getattr(args, "replay", None):
        options["cache"] = str(Path(args.replay) / "journal.bin")
        options["cache_mode"] = "replay"
        options["cache_sampled"] = True
    if getattr(args, "max_cost", None) is not None:
        from asynctg.engine.shared import CostCap

        # A hard cap on the engines too (the run's Budget stops between steps; this one never
        # lets a call past the cap): one cap for both engines, or Redis's for every process.
        options["max_cost"] = args.max_cost if args.redis_url else CostCap(args.max_cost)
    engine = get_engine(model, transport=transports[0], **options)
    if optimizer_model == model:
        return engine, engine, transports
    transports.append(RecordingTransport())
    backward = get_engine(optimizer_model, transport=transports[1], **options)
    return engine, backward, transports


@contextlib.asynccontextmanager
async def live(progress: Any) -> AsyncIterator[None]:
    """Redraw the progress display while the body runs (a task alongside it)."""
    from asynctg import fanout

    async with fanout.alongside(progress.ticker()):
        try:
            yield
        finally:
            progress.close()


def one_line(text: str, n: int) -> str:
    """``text`` on one line, safe to print, cut to ``n`` characters."""
    flat = " ".join(printable(text).split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."
