"""OpenTelemetry: a prompt-optimization step's span tree, the GenAI convention's attributes,
token counts equal to the provider's, metrics, and no text recorded unless asked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import asynctg as tg
from asynctg import apps, tasks, telemetry
from asynctg.sim import SimConfig, SimServer


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield exporter, reader
    telemetry.configure(tracer_provider=None, meter_provider=None, record_content=False)
    meter_provider.shutdown()
    tracer_provider.shutdown()


async def _one_step(record: bool = False) -> tuple[dict[str, Any], str]:
    task = tasks.get_task("object_counting", train_size=3, val_size=0, test_size=4)
    assert isinstance(task, tasks.PromptTask)
    config = apps.PromptConfig(batch_size=3, epochs=1, steps_per_epoch=1)
    async with SimServer(SimConfig(latency="1ms")) as sim:
        async with tg.get_engine("sim-1", base_url=sim.base_url, api_key="k") as engine:
            await apps.optimize_prompt(task, engine, config=config)
        return sim.stats(), task.train[0].question


async def test_a_step_makes_the_span_tree_with_genai_attributes(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    """optimize > evaluate / backward / step, with `chat sim-1` request spans under the graph
    spans; the GenAI attributes' token counts add up to what the simulator reported."""
    exporter, reader = otel
    stats, question = await _one_step()
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    names = {s.name for s in spans}
    assert {"optimize object_counting", "evaluate test", "backward", "step"} <= names
    assert "forward LLMCall" in names
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "optimize object_counting"
    chats = [s for s in spans if s.name == "chat sim-1"]
    assert len(chats) == stats["requests"]
    for chat in chats:
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "sim-1"
        assert chat.attributes["gen_ai.provider.name"] == "127.0.0.1"
        assert chat.attributes["gen_ai.response.model"]
        parent = by_id[chat.parent.span_id]  # type: ignore[union-attr]
        assert parent.name.startswith(("forward", "backward", "step")), parent.name
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats) == stats["prompt_tokens"]
    assert (
        sum(s.attributes["gen_ai.usage.output_tokens"] for s in chats) == stats["completion_tokens"]
    )
    (backward,) = [s for s in spans if s.name == "backward"]
    assert backward.attributes["asynctg.backward.requests"] == 6  # 2 per sample, B = 3
    assert backward.attributes["asynctg.backward.depth"] >= 2
    # nothing carries the prompts' text unless asked
    assert not any(question in str(v) for s in spans for v in s.attributes.values())
    metrics = reader.get_metrics_data()
    found = {
        m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage"} <= found


async def test_text_is_recorded_only_when_asked(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    """With configure(record_content=True) request spans carry the messages and replies."""
    exporter, _ = otel
    telemetry.configure(record_content=True)
    _, question = await _one_step()
    chats = [s for s in exporter.get_finished_spans() if s.name == "chat sim-1"]
    encoded = json.dumps(question)[1:41]  # as it sits in the recorded JSON
    assert any(encoded in str(s.attributes.get("gen_ai.input.messages")) for s in chats)
    assert all("gen_ai.output.messages" in s.attributes for s in chats)


def _metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_counters_match_the_engines_own_usage(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Any
) -> None:
    """asynctg.retries / cache_hits / cost (observed at collection) agree with engine.usage,
    and the duration histogram counts one data point per request."""
    _, reader = otel
    model = "counted-model"  # the totals are per model and cumulative for the process
    async with SimServer(SimConfig(fault_rate=0.3, faults=("500",), seed=5)) as sim:
        async with tg.get_engine(
            model,
            base_url=sim.base_url,
            api_key="k",
            retry=tg.RetryPolicy(testing=True),
            cache=tmp_path / "cache",
            price=(2.0, 8.0),
        ) as engine:
            for _ in range(2):  # the second round is answered by the cache
                for i in range(12):
                    await engine.generate(f"question {i}")
            usage = engine.usage
    assert usage.retries > 0 and usage.cache_hits == 12
    points = _metric_points(reader)

    def value(name: str) -> float:
        return sum(p.value for p in points[name] if p.attributes["gen_ai.request.model"] == model)

    assert value("asynctg.retries") == usage.retries
    assert value("asynctg.cache_hits") == 12
    assert value("asynctg.cost") == pytest.approx(usage.cost)
    durations = [
        p
        for p in points["gen_ai.client.operation.duration"]
        if p.attributes["gen_ai.request.model"] == model
    ]
    assert sum(p.count for p in durations) == 12  # one per request, retries inside it
