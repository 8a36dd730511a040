"""The load a prompt-optimization job puts on an endpoint, and plain request streams.

- ``run_calls``: a fixed number of chat requests, closed-loop at a concurrency or open-loop at
  a Poisson arrival rate, prompt and reply lengths drawn from a distribution (or prompts from
  a dataset file), streamed by default (time to first token, inter-token latency).
- ``run_steps``: real prompt-optimization steps at batch size B on generated object-counting
  questions: B forward calls at once, 2B backward calls released as their inputs arrive, one
  optimizer call: the dependency-shaped burst. Each step's time is compared with its
  critical-path bound (the median latency of one call per level: forward, two backward levels,
  optimizer) and with the budget's floor (its calls and tokens at the given rpm/tpm).
- ``sweep``: ``run_calls`` at each load level; the knee is the highest level whose p99 latency
  still meets the objective.

Every workload runs through an ``asynctg`` engine (its scheduler, retries, budgets), whose
transport is a ``RecordingTransport``: the report's in-flight timeline and 429s are the HTTP
exchanges themselves.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asynctg import fanout
from asynctg.engine.streaming import ChatStream, check_streaming
from asynctg.errors import APIError, APIStatusError, ConfigError
from asynctg.loadtest.recorder import Exchange, RecordingTransport
from asynctg.loadtest.stats import Sample, in_flight_timeline, percentile, summarize

__all__ = [
    "Lengths",
    "budget_use",
    "knee",
    "load_prompts",
    "run_calls",
    "run_steps",
    "sweep_levels",
]

_WORDS = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father"
).split()


_LENGTHS_FORMS = "token lengths {!r}: use N, uniform:LOW,HIGH or normal:MEAN,SD"


@dataclass(frozen=True)
class Lengths:
    """A distribution of token counts: ``"256"``, ``"uniform:64,512"`` or ``"normal:256,64"``."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Lengths:
        try:
            if ":" not in text:
                value = int(text)
                if value < 1:
                    raise ValueError
                return cls("fixed", value)
            kind, args = text.split(":", 1)
            a, b = (float(x) for x in args.split(","))
        except ValueError:
            raise ConfigError(_LENGTHS_FORMS.format(text)) from None
        if kind not in ("uniform", "normal") or a < 1 or b < 0 or (kind == "uniform" and b < a):
            raise ConfigError(_LENGTHS_FORMS.format(text))
        return cls(kind, a, b)

    def draw(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        return max(1, round(rng.gauss(self.a, self.b)))

    def __str__(self) -> str:
        return str(int(self.a)) if self.kind == "fixed" else f"{self.kind}:{self.a:g},{self.b:g}"


def synthetic_prompt(tokens: int, rng: random.Random, index: int) -> str:
    """About ``tokens`` tokens (4 characters each) of words, unique to request ``index`` so no
    server-side cache answers it."""
    head = f"Request {index}. Summarise these words: "
    words: list[str] = []
    size = len(head)
    while size < 4 * tokens:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return head + " ".join(words)


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a file: JSONL with ``prompt`` / ``question`` / ``text`` fields (or chat
    ``messages``, whose last user turn counts), or plain text, one prompt per line."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--dataset {path}: not a file")
    prompts: list[str] = []
    for line in file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"--dataset {path}: a line is not JSON ({exc})") from exc
            text = next(
                (record[k] for k in ("prompt", "question", "text", "input") if k in record), None
            )
            if text is None and isinstance(record.get("messages"), list):
                users = [m.get("content") for m in record["messages"] if m.get("role") == "user"]
                text = users[-1] if users else None
            if not isinstance(text, str):
                raise ConfigError(
                    f"--dataset {path}: each JSON line needs a prompt, question, text or "
                    "messages field"
                )
            prompts.append(text)
        else:
            prompts.append(line)
    if not prompts:
        raise ConfigError(f"--dataset {path}: no prompts in it")
    return prompts


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """The generator's own garbage-collection pauses would show up as latency and cap its
    rate (a quarter of its CPU at 5,000 requests/s): during a run, what existed before is
    frozen out of collections and young collections run every 200,000 allocations instead
    of 700. Cycles are still collected; the settings are restored after."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _arrivals(requests: int, rate: float, rng: random.Random) -> list[float]:
    """Poisson arrival offsets (seconds) of ``requests`` at ``rate`` per second."""
    t = 0.0
    out = []
    for _ in range(requests):
        out.append(t)
        t += rng.expovariate(rate)
    return out


async def run_calls(
    engine: Any,
    *,
    requests: int,
    concurrency: int | None = None,
    rate: float | None = None,
    prompt_tokens: Lengths = Lengths("fixed", 256),
    reply_tokens: Lengths = Lengths("fixed", 128),
    prompts: Sequence[str] | None = None,
    stream: bool = True,
    seed: int = 0,
    on_sample: Callable[[Sample], None] | None = None,
) -> dict[str, Any]:
    """Send ``requests`` chat requests (see the module docstring); the run's summary with its
    samples (``"samples"``) and the recorded HTTP exchanges' timeline."""
    if (concurrency is None) == (rate is None):
        raise ConfigError("give a concurrency or an arrival rate, not both")
    if requests < 1:
        raise ConfigError("requests must be at least 1")
    rng = random.Random(seed)
    # Every request is built (and checked) before the clock starts: the run only sends.
    plan = []
    for i in range(requests):
        text = (
            prompts[i % len(prompts)]
            if prompts
            else synthetic_prompt(prompt_tokens.draw(rng), rng, i)
        )
        request = engine.request(
            [{"role": "user", "content": text}], max_tokens=reply_tokens.draw(rng)
        )
        engine.check_fits(request)
        plan.append(request)
    if stream:
        check_streaming(engine.transport)
    clock = engine.clock
    samples: list[Sample] = []

    async def one(i: int) -> None:
        sample = Sample(start=clock.now(), end=0.0)
        try:
            if stream:
                s = ChatStream(engine, plan[i], 0)
                result = await s.collect()
                sample.ttft = s.ttft
                sample.itl = s.inter_token_latencies
                sample.usage_estimated = s.usage_estimated
            else:
                result = await engine.send(plan[i])
            sample.prompt_tokens = result.usage.prompt_tokens
            sample.completion_tokens = result.usage.completion_tokens
        except APIError as exc:
            sample.ok = False
            sample.error = type(exc).__name__
            sample.status = exc.status if isinstance(exc, APIStatusError) else None
        sample.end = clock.now()
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)

    recorder = _recorder(engine)
    first_exchange = len(recorder.exchanges) if recorder else 0
    before = engine.stats()
    cpu = time.process_time()
    started = clock.now()
    with _fewer_collections():
        await _issue(one, requests, concurrency, rate, rng, clock, started)
    wall = clock.now() - started
    summary = summarize(samples, wall=wall, client_cpu=time.process_time() - cpu)
    summary.update(_engine_counts(before, engine.stats()))
    exchanges = recorder.exchanges[first_exchange:] if recorder else []
    summary.update(_exchange_summary(exchanges, started))
    summary["samples"] = samples
    summary["load"] = {"concurrency": concurrency} if concurrency is not None else {"rate": rate}
    return summary


async def _issue(
    one: Callable[[int], Coroutine[Any, Any, None]],
    requests: int,
    concurrency: int | None,
    rate: float | None,
    rng: random.Random,
    clock: Any,
    started: float,
) -> None:
    """Closed loop: ``concurrency`` workers take the next request as theirs ends. Open loop:
    each request starts at its Poisson arrival time, however many are in flight."""
    async with fanout.task_group() as group:
        if concurrency is not None:
            counter = iter(range(requests))

            async def worker() -> None:
                for i in counter:
                    await one(i)

            for _ in range(min(concurrency, requests)):
                group.create_task(worker())
        else:
            assert rate is not None
            for i, offset in enumerate(_arrivals(requests, rate, rng)):
                delay = started + offset - clock.now()
                if delay > 0:
                    await clock.sleep(delay)
                group.create_task(one(i))


def _recorder(engine: Any) -> RecordingTransport | None:
    transport = getattr(engine, "transport", None)
    return transport if isinstance(transport, RecordingTransport) else None


def _exchange_summary(exchanges: Sequence[Exchange], started: float) -> dict[str, Any]:
    """What the HTTP layer saw: requests sent (retries included), 429s and failures by kind,
    and the in-flight / 429 timeline (seconds since the run started)."""
    by_status: dict[str, int] = {}
    for e in exchanges:
        key = str(e.status) if e.status is not None else (e.error or "no response")
        by_status[key] = by_status.get(key, 0) + 1
    rate_limited_at = sorted(round(e.end - started, 3) for e in exchanges if e.status == 429)
    return {
        "http_requests": len(exchanges),
        "http_by_status": dict(sorted(by_status.items())),
        "http_429": by_status.get("429", 0),
        "timeline": {
            "in_flight": [(round(t, 3), n) for t, n in in_flight_timeline(exchanges)],
            "rate_limited_at": rate_limited_at,
        },
    }


def _engine_counts(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The engine's own retry and 429 counts over a run (exact whatever the transport)."""
    return {k: after[k] - before[k] for k in ("retries", "rate_limited")}


def budget_use(
    requests: int, tokens: int, wall_s: float, rpm: float | None, tpm: float | None
) -> dict[str, float]:
    """The share of an rpm / tpm budget a run used: its requests and tokens per minute over
    the budget's (only the budgets given)."""
    minutes = wall_s / 60.0
    out = {}
    if rpm:
        out["rpm_used"] = requests / minutes / rpm
    if tpm:
        out["tpm_used"] = tokens / minutes / tpm
    return out


def sweep_levels(text: str | None, kind: str) -> list[float] | None:
    """``"1,8,64"`` -> [1, 8, 64] (concurrency levels are integers)."""
    if text is None:
        return None
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{kind} {text!r}: a number or a comma-separated list") from None
    if not levels or any(v <= 0 or math.isinf(v) for v in levels):
        raise ConfigError(f"--{kind} {text!r}: levels must be positive")
    if kind == "concurrency" and any(v != int(v) for v in levels):
        raise ConfigError(f"--concurrency {text!r}: whole numbers")
    return levels


def knee(rows: Sequence[dict[str, Any]], slo_s: float, metric: str = "latency_s") -> Any:
    """The highest load level whose p99 ``metric`` meets ``slo_s`` with no failed request;
    None when even the lowest misses it."""
    best = None
    for row in rows:
        p99 = row[metric]["p99"]
        if p99 is not None and p99 <= slo_s and row["failed"] == 0:
            best = row["level"]
    return best


async def run_steps(
    engine: Any,
    *,
    batch_size: int,
    steps: int,
    test_size: int = 0,
    seed: int = 0,
    rpm: float | None = None,
    tpm: float | None = None,
    on_event: Any = None,
) -> dict[str, Any]:
    """``steps`` prompt-optimization steps at batch ``batch_size`` (plus, with ``test_size``,
    the test evaluations of a short optimization run); per step: time, calls, tokens, and the
    critical-path bound and budget floor it is compared with."""
    from asynctg.apps import PromptConfig, optimize_prompt
    from asynctg.runs.loop import RunEvent
    from asynctg.tasks import PromptTask, get_task

    task = get_task(
        "object_counting",
        data_seed=seed,
        train_size=batch_size * steps,
        val_size=0,
        test_size=max(test_size, 1),
    )
    assert isinstance(task, PromptTask)
    config = PromptConfig(
        batch_size=batch_size,
        epochs=1,
        steps_per_epoch=steps,
        seed=seed,
        evaluate_test=test_size > 0,
    )
    recorder = _recorder(engine)
    clock = engine.clock
    marks: list[float] = []

    def listen(event: RunEvent) -> None:
        if event.kind == "step":
            marks.append(clock.now())
        if on_event is not None:
            on_event(event)

    first = len(recorder.exchanges) if recorder else 0
    cpu = time.process_time()
    started = clock.now()
    before = engine.stats()
    result = await optimize_prompt(task, engine, config=config, on_event=listen)
    wall = clock.now() - started
    after = engine.stats()
    exchanges = recorder.exchanges[first:] if recorder else []
    per_kind: dict[str, list[float]] = {}
    for e in exchanges:
        if e.status == 200:
            per_kind.setdefault(e.kind, []).append(e.latency)
    median = {k: percentile(v, 0.5) for k, v in per_kind.items()}
    # forward, two backward levels, optimizer: the step's dependency chain
    bound = None
    if all(median.get(k) is not None for k in ("forward", "backward", "optimizer")):
        bound = median["forward"] + 2 * median["backward"] + median["optimizer"]  # type: ignore[operator]
    calls = after["calls"] - before["calls"]
    tokens = (after["prompt_tokens"] + after["completion_tokens"]) - (
        before["prompt_tokens"] + before["completion_tokens"]
    )
    if test_size == 0:
        step_times = _step_times(exchanges, started)
    else:  # rounds of a short run: each step with the test evaluation after it (the first
        # mark is the evaluation before any step)
        bounds = marks if len(marks) > steps else [started, *marks]
        step_times = [b - a for a, b in itertools.pairwise(bounds)]
    calls_per_step = 3 * batch_size + 1
    floor = None
    if rpm or tpm:
        per_step_tokens = tokens / max(1, calls) * calls_per_step
        floor = max(
            60.0 * calls_per_step / rpm if rpm else 0.0,
            60.0 * per_step_tokens / tpm if tpm else 0.0,
        )
    summary = {
        "workload": "step" if test_size == 0 else "optimize",
        "batch_size": batch_size,
        "steps": steps,
        "wall_s": wall,
        "calls": calls,
        "calls_per_step": calls_per_step,
        "tokens": tokens,
        "step_s": step_times,
        "step_mean_s": sum(step_times) / len(step_times) if step_times else None,
        "critical_path_bound_s": bound,
        "budget_floor_s": floor,
        "median_latency_s": median,
        "calls_by_kind": {k: len(v) for k, v in sorted(per_kind.items())},
        "client_cpu_s": time.process_time() - cpu,
        **_engine_counts(before, after),
        "final_prompt": result.final_prompt,
        "test_accuracy": [row.get("test_accuracy") for row in result.history],
    }
    if summary["step_mean_s"] and bound:
        summary["step_vs_bound"] = summary["step_mean_s"] / bound
    if summary["step_mean_s"] and floor:
        summary["step_vs_floor"] = summary["step_mean_s"] / floor
    summary.update(budget_use(after["requests"] - before["requests"], tokens, wall, rpm, tpm))
    summary.update(_exchange_summary(exchanges, started))
    return summary


def _step_times(exchanges: Sequence[Exchange], started: float) -> list[float]:
    """Each step's duration: from its first forward request to its optimizer call's end (the
    test evaluations between steps are not part of a step)."""
    ends = [e for e in exchanges if e.kind == "optimizer" and e.status == 200]
    forwards = sorted(e.start for e in exchanges if e.kind == "forward")
    times = []
    previous_end = started
    for optimizer in sorted(ends, key=lambda e: e.end):
        begin = next((t for t in forwards if t >= previous_end), None)
        if begin is None or begin > optimizer.end:
            continue
        times.append(optimizer.end - begin)
        previous_end = optimizer.end
    return times
