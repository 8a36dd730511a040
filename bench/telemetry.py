"""What tracing costs per call: asynctg's engine CPU with OpenTelemetry absent, present without
an SDK, and recording every span and metric into a no-op exporter.

    python -m bench telemetry [--quick] [--calls 2000] [--rounds 3]

Each measurement is a fresh process making ``--calls`` calls (64 in flight) to a zero-latency
simulator in its own process; CPU is the client's ``process_time`` over the calls (after a
warm-up), the median over ``--rounds``. "absent" hides the ``opentelemetry`` package from the
process (as if the extra were not installed); "api" has the API but no SDK (spans are no-ops);
"sdk" records every span (SimpleSpanProcessor) and metric into exporters that drop them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from bench.common import ROOT, run_child, sim_reset, simulator, table, write_result

CHILD = r"""
import asyncio, json, sys, time
MODE, URL, CALLS = sys.argv[1], sys.argv[2], int(sys.argv[3])
if MODE == "absent":
    sys.modules["opentelemetry"] = None  # the import fails: asynctg takes its no-op path
import asynctg as tg
if MODE == "sdk":
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(Drop()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tg.telemetry.configure(tracer_provider=tp, meter_provider=mp)
async def main():
    async with tg.get_engine("m", base_url=URL, api_key="k", max_concurrency=64) as engine:
        await asyncio.gather(*(engine.generate(f"warm {i}") for i in range(100)))
        cpu = time.process_time()
        await asyncio.gather(*(engine.generate(f"call {i}") for i in range(CALLS)))
        return time.process_time() - cpu
def sdk_floor():
    # The SDK's own work for one request, without asynctg: one CLIENT span with the same
    # attributes and three histogram records (duration, input and output tokens).
    from opentelemetry.trace import SpanKind
    tracer = tp.get_tracer("floor")
    meter = mp.get_meter("floor")
    duration, tokens = meter.create_histogram("d"), meter.create_histogram("t")
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "127.0.0.1",
            "gen_ai.request.model": "m"}
    inp, out = {**base, "gen_ai.token.type": "input"}, {**base, "gen_ai.token.type": "output"}
    cpu = time.process_time()
    for i in range(CALLS):
        span = tracer.start_span("chat m", kind=SpanKind.CLIENT, attributes=base)
        span.set_attributes({"gen_ai.response.model": "m", "gen_ai.usage.input_tokens": i,
                             "gen_ai.usage.output_tokens": 7})
        span.end()
        duration.record(0.001, base)
        tokens.record(i, inp)
        tokens.record(7, out)
    return time.process_time() - cpu
out = {"cpu_us_per_call": 1e6 * asyncio.run(main()) / CALLS}
if MODE == "sdk":
    out["sdk_floor_us_per_call"] = 1e6 * sdk_floor() / CALLS
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench telemetry")
    parser.add_argument("--quick", action="store_true", help="1,000 calls x 3 rounds")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    calls = args.calls or (1000 if args.quick else 2000)
    samples: dict[str, list[float]] = {"absent": [], "api": [], "sdk": []}
    floors: list[float] = []
    with simulator("--latency", "0") as url:
        for _ in range(args.rounds):
            for mode in samples:
                sim_reset(url)
                child = run_child(
                    [sys.executable, "-c", CHILD, mode, url, str(calls)],
                    env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                )
                if child.returncode != 0:
                    raise RuntimeError(child.stderr[-2000:])
                measured = json.loads(child.stdout)
                samples[mode].append(measured["cpu_us_per_call"])
                if "sdk_floor_us_per_call" in measured:
                    floors.append(measured["sdk_floor_us_per_call"])
    base = statistics.median(samples["absent"])
    rows = [
        {
            "opentelemetry": mode,
            "cpu_us_per_call": round(statistics.median(values), 1),
            "vs_absent": round(statistics.median(values) / base, 3),
        }
        for mode, values in samples.items()
    ]
    print(table(rows, ["opentelemetry", "cpu_us_per_call", "vs_absent"]))
    floor = statistics.median(floors)
    added = statistics.median(samples["sdk"]) - base
    summary = {
        "engine_us_per_call": round(base, 1),
        "sdk_added_us_per_call": round(added, 1),
        "sdk_floor_us_per_call": round(floor, 1),
        "asynctg_part_us_per_call": round(added - floor, 1),
        "asynctg_part_vs_engine": round((added - floor) / base, 3),
        "sdk_floor_vs_engine": round(floor / base, 3),
    }
    print(
        f"tracing adds {added:.1f} us/call: the SDK's own span + 3 histogram records cost "
        f"{floor:.1f} us ({floor / base:.0%} of the engine's {base:.1f} us) by themselves, "
        f"asynctg's instrumentation around them {added - floor:.1f} us "
        f"({(added - floor) / base:.0%})"
    )
    results = {
        "rows": rows,
        "summary": summary,
        "calls": calls,
        "rounds": args.rounds,
        "samples": samples,
        "sdk_floor_samples": floors,
    }
    write_result("telemetry", vars(args), results)
    return results
