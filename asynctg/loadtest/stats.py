"""What a load run measured: one ``Sample`` per request, summarised the way the established
tools report (requests/s, input and output tokens/s, end-to-end latency, time to first token,
inter-token latency: mean, p50, p90, p99; errors and 429s by kind).

Percentiles are nearest-rank (the value of an actual request, never an interpolation), so a
reported p99 is a latency some request really had. The same functions serve ``asynctg bench``
and the project's own ``bench/`` suite.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Sample", "distribution", "percentile", "summarize"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ``values`` by nearest rank; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def distribution(values: Iterable[float]) -> dict[str, float | None]:
    """mean, p50, p90, p99, max (seconds) of ``values``; all None when empty."""
    ordered = sorted(values)
    if not ordered:
        return dict.fromkeys(("mean", "p50", "p90", "p99", "max"))
    return {
        "mean": sum(ordered) / len(ordered),
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
    }


@dataclass(slots=True)
class Sample:
    """One request of a load run; times are seconds on the run's clock."""

    start: float  # when the load generator issued it
    end: float
    ok: bool = True
    error: str | None = None  # the error's type name (RateLimitError, APIConnectionError, ...)
    status: int | None = None  # its HTTP status, when it had one
    ttft: float | None = None  # streams: to the first content delta
    itl: list[float] = field(default_factory=list)  # streams: gaps between deltas
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False

    @property
    def latency(self) -> float:
        return self.end - self.start


def summarize(
    samples: Sequence[Sample],
    *,
    wall: float,
    client_cpu: float | None = None,
) -> dict[str, Any]:
    """The run's numbers. ``wall``: seconds from the first issue to the last end;
    ``client_cpu``: the generator's own CPU seconds (process time) over that span."""
    ok = [s for s in samples if s.ok]
    wall = max(wall, 1e-9)
    errors = Counter(s.error or "unknown" for s in samples if not s.ok)
    statuses = Counter(str(s.status) for s in samples if not s.ok and s.status)
    prompt = sum(s.prompt_tokens for s in ok)
    completion = sum(s.completion_tokens for s in ok)
    itl = [gap for s in ok for gap in s.itl]
    out: dict[str, Any] = {
        "requests": len(samples),
        "ok": len(ok),
        "failed": len(samples) - len(ok),
        "errors": dict(sorted(errors.items())),
        "error_statuses": dict(sorted(statuses.items())),
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "input_tokens_per_s": prompt / wall,
        "output_tokens_per_s": completion / wall,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "usage_estimated": any(s.usage_estimated for s in ok),
        "latency_s": distribution(s.latency for s in ok),
        "ttft_s": distribution(s.ttft for s in ok if s.ttft is not None),
        "itl_s": distribution(itl),
    }
    if client_cpu is not None:
        out["client_cpu_s"] = client_cpu
        out["client_cpu_per_request_ms"] = 1000 * client_cpu / max(1, len(samples))
        # one Python process uses at most one core: near it, the client was the bottleneck
        out["client_busy"] = client_cpu / wall
        out["client_limited"] = client_cpu / wall > 0.85
    return out


class _Interval(Protocol):
    start: float
    end: float


def in_flight_timeline(samples: Sequence[_Interval], buckets: int = 200) -> list[tuple[float, int]]:
    """(time since the first start, requests in flight) at ``buckets`` evenly spaced instants
    of the run; ``samples``: anything with a ``start`` and an ``end`` (samples, exchanges)."""
    if not samples:
        return []
    starts = sorted(s.start for s in samples)
    ends = sorted(s.end for s in samples)
    t0, t1 = starts[0], max(ends[-1], starts[-1])
    span = max(t1 - t0, 1e-9)
    points = []
    for i in range(buckets + 1):
        t = t0 + span * i / buckets
        # started at or before t, not yet ended at t
        points.append((t - t0, bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)))
    return points
