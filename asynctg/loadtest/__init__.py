"""Load benchmarks of any OpenAI-compatible endpoint: ``asynctg bench``.

Request streams (``calls``: a concurrency or a Poisson rate, streamed for time to first token
and inter-token latency), the dependency-shaped bursts of prompt-optimization steps (``step``,
``optimize``), sweeps that find the knee under a latency objective, rate budgets and 429s,
and a report. See ``asynctg.loadtest.workloads`` and ``asynctg.loadtest.stats``.
"""

from asynctg.loadtest.recorder import Exchange, RecordingTransport, request_kind
from asynctg.loadtest.stats import Sample, distribution, percentile, summarize
from asynctg.loadtest.workloads import Lengths, knee, load_prompts, run_calls, run_steps

__all__ = [
    "Exchange",
    "Lengths",
    "RecordingTransport",
    "Sample",
    "distribution",
    "knee",
    "load_prompts",
    "percentile",
    "request_kind",
    "run_calls",
    "run_steps",
    "summarize",
]
