"""An OpenAI-compatible simulated provider, for tests and benchmarks.

Everything else in asynctg talks to it over loopback HTTP exactly as to a real provider:
latency distributions, requests- and tokens-per-minute budgets answered with 429 and the
headers real providers send, injected faults, usage in every response, and answers that follow
the request's format instructions (see :mod:`asynctg.sim.answers`).

>>> from asynctg.sim import SimConfig, SimServer
>>> async def main() -> None:                               # doctest: +SKIP
...     async with SimServer(SimConfig(latency="100ms", rpm=600)) as sim:
...         print(sim.base_url)                             # http://127.0.0.1:PORT/v1

From a shell: ``python -m asynctg.sim --port 0 --latency 50ms --rpm 600`` prints the base URL on
one line once it is serving, then serves until SIGINT or SIGTERM.

Beyond OpenAI's chat completions the simulator serves, on the same port:

* **Anthropic's Messages API** (``POST /v1/messages``): ``x-api-key`` (required when the sim has
  an ``api_key``), ``anthropic-version`` (400 without it), ``model``, ``max_tokens`` (required),
  ``system`` (a string or text blocks), ``messages`` (strings or text/image blocks),
  ``temperature``, ``stop_sequences``, ``stream``. Answers follow the same format rules as chat
  (:mod:`asynctg.sim.answers`). Errors in Anthropic's shape (``{"type": "error", "error":
  {"type", "message"}}``): 400 ``invalid_request_error`` ("prompt is too long" past
  ``context_window``, counting ``max_tokens``), 401 ``authentication_error``, 429
  ``rate_limit_error`` with ``retry-after``, 500 ``api_error`` and 529 ``overloaded_error`` (fault
  kinds "500" and "529"; in a stream they become an ``error`` event after half the text).
  Streams send ``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``
  (``text_delta``), ``content_block_stop``, ``message_delta``, ``message_stop``. Budgets
  ``anthropic_rpm``, ``anthropic_itpm``, ``anthropic_otpm`` are separate buckets reported in
  ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}`` (reset
  an RFC 3339 time); ``max_tokens`` is charged against the output budget up front and what the
  answer did not use is given back when it is sent; cache reads do not count against the input
  budget (see :class:`asynctg.sim.buckets.InputOutputLimiter`).
* **Prompt caching** for both APIs (:mod:`asynctg.sim.prefix_cache`): OpenAI's automatic cache
  reports ``usage.prompt_tokens_details.cached_tokens`` (0, or 1,024 + k * 128) and honours
  ``prompt_cache_key`` when ``prompt_cache_shards`` > 1; Anthropic's explicit ``cache_control``
  breakpoints (at most 4; 1,024 tokens minimum, 2,048 for Haiku) report
  ``cache_creation_input_tokens`` on a write and ``cache_read_input_tokens`` on a hit.
  ``prompt_cache`` (on/off), ``prompt_cache_ttl`` (300 s after last use, on the sim's clock),
  ``prompt_cache_max_entries`` (bounded memory).
* **A provider-side bill** (:mod:`asynctg.sim.billing`) per API in integer nano-dollars at
  ``openai_prices`` / ``anthropic_prices`` (:class:`~asynctg.sim.billing.Prices`: input,
  output, cached input, 5-minute cache write, batch and flex factors), on ``GET /sim/bill`` and
  in ``/sim/stats`` under ``"bill"``, so tests compare an engine's cost with the provider's.
* **Flex processing**: ``service_tier: "flex"`` in a chat request is slower
  (``flex_latency_factor``), refused with 429 ``resource_unavailable`` for a
  ``flex_unavailable_rate`` share (not billed), billed at the flex factor, and answered with
  ``"service_tier": "flex"`` (other requests say ``"default"``).
* **Batch APIs** (:mod:`asynctg.sim.batches`): OpenAI's ``/v1/files`` and ``/v1/batches`` and
  Anthropic's ``/v1/messages/batches``, progressing on the sim's clock
  (``batch_completion_seconds``), with a ``batch_failure_rate`` share of failed requests and a
  ``batch_expire`` switch; billed at the batch factor, outside the rpm/tpm budgets.
* **A fast-forwardable clock**: ``SimServer.advance(seconds)`` or ``POST /sim/advance
  {"seconds": N}`` moves budgets, cache TTLs and batches forward, so tests never sleep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from asynctg.sim.answers import default_answer
from asynctg.sim.billing import Prices
from asynctg.sim.buckets import RateLimiter, TokenBucket, format_duration
from asynctg.sim.config import FAULT_KINDS, LatencyModel, SimConfig, parse_latency
from asynctg.sim.server import SimServer

__all__ = [
    "FAULT_KINDS",
    "LatencyModel",
    "Prices",
    "RateLimiter",
    "SimConfig",
    "SimServer",
    "TokenBucket",
    "add_arguments",
    "config_from_args",
    "default_answer",
    "format_duration",
    "main",
    "parse_latency",
    "run_from_args",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's command-line options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind; 0 picks a free one (default 8000)"
    )
    parser.add_argument(
        "--latency",
        default="0",
        help='latency spec, with its unit: "0", "100ms", "2s", "uniform:50ms,150ms", '
        '"lognormal:100ms,0.5", "exp:100ms" (default 0; a bare "100" is refused)',
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="extra latency per completion token (default: none)",
    )
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute (unlimited)")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute (unlimited)")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability of a fault, 0..1 (default 0)"
    )
    parser.add_argument(
        "--faults",
        default="500,503,drop,malformed",
        help=f"comma-separated fault kinds among {','.join(FAULT_KINDS)} (default: the fast "
        "ones; add slow for responses held --slow-seconds)",
    )
    parser.add_argument(
        "--slow-seconds", type=float, default=30.0, help='delay of a "slow" fault (default 30)'
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument(
        "--quota-tokens", type=int, default=None, help="total tokens before insufficient_quota"
    )
    parser.add_argument(
        "--context-window", type=int, default=None, help="largest accepted prompt, in tokens"
    )
    parser.add_argument(
        "--feedback-tokens",
        type=int,
        default=300,
        help="rough length of feedback (backward) replies, in tokens (default 300; 0: 2-3 "
        "sentences)",
    )
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument(
        "--no-rate-limit-headers",
        action="store_true",
        help="do not send x-ratelimit-* headers",
    )
    parser.add_argument(
        "--record", action="store_true", help="keep request bodies (GET /sim/requests)"
    )
    parser.add_argument(
        "--model-name", default="sim-1", help="model reported when a request names none"
    )
    parser.add_argument("--anthropic-rpm", type=int, default=None, help="Messages API requests/min")
    parser.add_argument(
        "--anthropic-itpm", type=int, default=None, help="Messages input tokens/min"
    )
    parser.add_argument(
        "--anthropic-otpm", type=int, default=None, help="Messages output tokens/min"
    )
    parser.add_argument("--no-prompt-cache", action="store_true", help="report no cached tokens")
    parser.add_argument(
        "--prompt-cache-ttl", type=float, default=300.0, help="cached prefix lifetime (300 s)"
    )
    parser.add_argument(
        "--flex-unavailable-rate", type=float, default=0.0, help="share of flex 429s, 0..1"
    )
    parser.add_argument(
        "--batch-completion-seconds", type=float, default=60.0, help="batch duration (60 s)"
    )
    parser.add_argument(
        "--batch-failure-rate", type=float, default=0.0, help="share of failed batch requests"
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build a :class:`SimConfig` from parsed options (``ValueError`` if they are invalid)."""
    return SimConfig(
        latency=args.latency,
        tokens_per_second=getattr(args, "tokens_per_second", None),
        rpm=args.rpm,
        tpm=args.tpm,
        fault_rate=args.fault_rate,
        faults=args.faults,
        slow_seconds=getattr(args, "slow_seconds", 30.0),
        seed=args.seed,
        quota_tokens=args.quota_tokens,
        context_window=args.context_window,
        feedback_tokens=getattr(args, "feedback_tokens", 300) or None,
        api_key=args.api_key,
        rate_limit_headers=not args.no_rate_limit_headers,
        record=args.record,
        model_name=getattr(args, "model_name", "sim-1"),
        anthropic_rpm=getattr(args, "anthropic_rpm", None),
        anthropic_itpm=getattr(args, "anthropic_itpm", None),
        anthropic_otpm=getattr(args, "anthropic_otpm", None),
        prompt_cache=not getattr(args, "no_prompt_cache", False),
        prompt_cache_ttl=getattr(args, "prompt_cache_ttl", 300.0),
        flex_unavailable_rate=getattr(args, "flex_unavailable_rate", 0.0),
        batch_completion_seconds=getattr(args, "batch_completion_seconds", 60.0),
        batch_failure_rate=getattr(args, "batch_failure_rate", 0.0),
    )


async def _serve(config: SimConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # not available on every platform; Ctrl-C then arrives as KeyboardInterrupt instead
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with SimServer(config, host=host, port=port) as sim:
            # the one line on stdout: benchmarks read it to learn the URL (and the port)
            print(sim.base_url, flush=True)
            print(
                f"asynctg sim serving {sim.base_url} (latency={config.latency_model.spec()}, "
                f"rpm={config.rpm}, tpm={config.tpm}, fault_rate={config.fault_rate})",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run

    def run(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)

    return run


def run_from_args(args: argparse.Namespace) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; return the exit status.

    Prints the base URL on one line of stdout once serving (``--port 0`` picks a free port).
    Returns 2 with a message on stderr when the settings are invalid, 0 on a clean stop.
    """
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"asynctg sim: error: {exc}", file=sys.stderr)
        return 2
    try:
        _runner()(_serve(config, args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        print(f"asynctg sim: error: cannot serve on {where}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m asynctg.sim [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m asynctg.sim",
        description="Serve an OpenAI-compatible simulated provider.",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
