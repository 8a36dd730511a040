"""OpenTelemetry traces and metrics, following the GenAI semantic conventions (optional).

With ``opentelemetry-api`` installed (``pip install 'asynctg[otel]'``) asynctg emits:

- one span per provider request, ``chat {model}`` (kind CLIENT), with ``gen_ai.operation.name``,
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens`` / ``gen_ai.usage.output_tokens``, the prompt cache's share of
  the input (``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``:
  both part of ``input_tokens``, as the conventions say), the request's price
  (``asynctg.cost_usd``, cached reads and writes priced), ``error.type`` on failure,
  and each retry (``asynctg.retry``) and 429 wait (``asynctg.rate_limited``) as an event;
- spans for the graph's work, which the request spans nest under: each forward call
  (``forward {Function}``), ``backward`` (``asynctg.backward.requests``,
  ``asynctg.backward.depth``), each aggregation level (``aggregate level {n}``), ``step``,
  evaluation fan-outs (``evaluate {split}``) and a whole run (``optimize {task}``);
- metrics: ``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage`` (the
  conventions'), and asynctg's own ``asynctg.retries``, ``asynctg.rate_limited``,
  ``asynctg.cache_hits``, ``asynctg.cost`` (USD) counters and ``asynctg.in_flight`` /
  ``asynctg.queued`` gauges.

Prompt and response text are recorded (``gen_ai.input.messages``, ``gen_ai.output.messages``)
only after ``configure(record_content=True)``. Without the package nothing is imported and every
hook is a constant-time no-op. ``configure(tracer_provider=..., meter_provider=...)`` sends to
given providers instead of the global ones (tests use in-memory exporters this way);
``configure_otlp()`` (the CLI's ``--otel``) sets up the SDK with OTLP exporters.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from asynctg._version import __version__

__all__ = ["configure", "configure_otlp", "enabled", "span"]

try:  # the API only: a no-op unless an SDK is configured
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised where the extra is absent
    _trace = None  # type: ignore[assignment]
    _metrics = None  # type: ignore[assignment]


class _State:
    def __init__(self) -> None:
        self.tracer: Any = None
        self.instruments: dict[str, Any] | None = None
        self.record_content = False
        self.engines: list[Any] = []
        self.providers: tuple[Any, Any] = (None, None)
        self.global_seen: Any = None
        self.global_records = False


_state = _State()


def enabled() -> bool:
    """Whether OpenTelemetry is importable (its API; an SDK makes the spans real)."""
    return _trace is not None


_KEEP: Any = object()


def configure(
    *,
    tracer_provider: Any = _KEEP,
    meter_provider: Any = _KEEP,
    record_content: bool | None = None,
) -> None:
    """Use these providers (None: the global ones; not given: keep the current choice) and
    choose whether prompt and response text is recorded."""
    tracer, meter = _state.providers
    if tracer_provider is not _KEEP:
        tracer, _state.tracer = tracer_provider, None
    if meter_provider is not _KEEP:
        meter, _state.instruments = meter_provider, None
    _state.providers = (tracer, meter)
    if record_content is not None:
        _state.record_content = record_content


def _tracer() -> Any:
    if _state.tracer is None and _trace is not None:
        provider = _state.providers[0]
        _state.tracer = (
            provider.get_tracer("asynctg", __version__)
            if provider is not None
            else _trace.get_tracer("asynctg", __version__)
        )
    return _state.tracer


def _meter_instruments() -> dict[str, Any] | None:
    if _state.instruments is None and _metrics is not None:
        provider = _state.providers[1]
        meter = (
            provider.get_meter("asynctg", __version__)
            if provider is not None
            else _metrics.get_meter("asynctg", __version__)
        )
        _state.instruments = {
            "duration": meter.create_histogram(
                "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration"
            ),
            "tokens": meter.create_histogram(
                "gen_ai.client.token.usage", unit="{token}", description="tokens used"
            ),
        }
        # asynctg's own counters are observed at collection time from plain in-process totals:
        # an SDK counter's add() costs about as much as a histogram record (attribute cleaning
        # and hashing on every call), a float += next to nothing.
        for name, field, unit in (
            ("asynctg.retries", "retries", "{request}"),
            ("asynctg.rate_limited", "rate_limited", "{response}"),
            ("asynctg.cache_hits", "cache_hits", "{call}"),
            ("asynctg.cost", "cost", "USD"),
        ):
            meter.create_observable_counter(name, callbacks=[_observe_totals(field)], unit=unit)
        meter.create_observable_gauge(
            "asynctg.in_flight", callbacks=[_observe("in_flight")], unit="{request}"
        )
        meter.create_observable_gauge(
            "asynctg.queued", callbacks=[_observe("queued")], unit="{request}"
        )
    return _state.instruments


def _observe(field: str) -> Any:
    def callback(options: Any) -> Any:
        from opentelemetry.metrics import Observation

        for engine in list(_state.engines):
            stats = engine.scheduler.statistics()
            yield Observation(stats[field], {"gen_ai.request.model": engine.model})

    return callback


class _Totals:
    """One model's running totals behind the observable counters (never reset: cumulative)."""

    __slots__ = ("cache_hits", "cost", "rate_limited", "retries")

    def __init__(self) -> None:
        self.retries = 0
        self.rate_limited = 0
        self.cache_hits = 0
        self.cost = 0.0


_TOTALS: dict[str, _Totals] = {}


def _totals(model: str) -> _Totals:
    found = _TOTALS.get(model)
    if found is None:
        found = _TOTALS[model] = _Totals()
    return found


def _observe_totals(field: str) -> Any:
    def callback(options: Any) -> Any:
        from opentelemetry.metrics import Observation

        for model, totals in list(_TOTALS.items()):
            yield Observation(getattr(totals, field), {"gen_ai.request.model": model})

    return callback


def track(engine: Any) -> None:
    """Report ``engine``'s queue in the gauges (engines register themselves)."""
    if _metrics is not None:
        _state.engines.append(engine)
        if len(_state.engines) > 256:  # engines made and dropped in a loop: keep the recent
            del _state.engines[:128]


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span around the block (``None`` inside when OpenTelemetry is absent)."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in attributes.items() if v is not None}


def _recording() -> bool:
    """Whether spans would be recorded: a provider was configured here, or the global one is
    an SDK's (the API's own proxy hands out no-op spans, which are not worth creating)."""
    if _trace is None:
        return False
    if _state.providers[0] is not None:
        return True
    # The API keeps the global provider in a module attribute (None until one is set);
    # reading it is a dict lookup, where get_tracer_provider() also consults the environment.
    provider = getattr(_trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        return False
    if provider is _UNKNOWN:  # another API version: ask it
        provider = _trace.get_tracer_provider()
    if provider is not _state.global_seen:
        _state.global_seen = provider
        _state.global_records = type(provider).__name__ not in _NO_OP_PROVIDERS
    return _state.global_records


_UNKNOWN: Any = object()
_NO_OP_PROVIDERS = frozenset({"ProxyTracerProvider", "NoOpTracerProvider"})


class RequestSpan:
    """The span and metrics of one provider request (``ChatEngine._send``).

    Built for the hot path: the span is started, not made current (nothing nests under a
    request), its attributes and the metrics' attribute sets are made once per model.
    """

    __slots__ = ("attrs", "span", "started", "totals")

    def __init__(self, model: str, provider: str, messages: Any) -> None:
        self.started = time.perf_counter()
        self.attrs = _attributes(model, provider)
        self.totals = _totals(model)
        assert _trace is not None
        self.span = _tracer().start_span(
            f"chat {model}", kind=_trace.SpanKind.CLIENT, attributes=self.attrs["span"]
        )
        if _state.record_content:
            self.span.set_attribute("gen_ai.input.messages", json.dumps(list(messages)))

    def event(self, name: str, **attributes: Any) -> None:
        self.span.add_event(name, _clean(attributes))
        if name == "asynctg.rate_limited":
            self.totals.rate_limited += 1
        else:
            self.totals.retries += 1

    def finish(
        self, result: Any = None, error: BaseException | None = None, cost: float = 0.0
    ) -> None:
        span = self.span
        attrs = self.attrs
        instruments = _meter_instruments()
        if result is not None:
            usage = result.usage
            span.set_attributes(
                {
                    "gen_ai.response.model": result.model or attrs["span"]["gen_ai.request.model"],
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
                    "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
                    "asynctg.cost_usd": cost,
                }
            )
            if _state.record_content:
                span.set_attribute("gen_ai.output.messages", json.dumps(list(result.texts)))
            self.totals.cost += cost
            if instruments is not None:
                instruments["duration"].record(time.perf_counter() - self.started, attrs["span"])
                instruments["tokens"].record(usage.prompt_tokens, attrs["input"])
                instruments["tokens"].record(usage.completion_tokens, attrs["output"])
        if error is not None:
            kind = type(error).__name__
            span.set_attribute("error.type", kind)
            assert _trace is not None
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)[:200]))
            if instruments is not None:
                instruments["duration"].record(
                    time.perf_counter() - self.started, {**attrs["span"], "error.type": kind}
                )
        span.end()


_ATTRIBUTES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}


def _attributes(model: str, provider: str) -> dict[str, dict[str, Any]]:
    """The attribute sets of one model's spans and metrics, made once."""
    found = _ATTRIBUTES.get((model, provider))
    if found is None:
        span = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
        }
        found = _ATTRIBUTES[(model, provider)] = {
            "span": span,
            "input": {**span, "gen_ai.token.type": "input"},
            "output": {**span, "gen_ai.token.type": "output"},
        }
    return found


def request_span(model: str, provider: str, messages: Any) -> RequestSpan | None:
    """A ``RequestSpan``, or None (no work at all) when nothing would record it."""
    if not _recording():
        return None
    return RequestSpan(model, provider, messages)


def cache_hit(model: str) -> None:
    if _recording():
        _totals(model).cache_hits += 1


def configure_otlp(service_name: str = "asynctg") -> None:
    """Export traces and metrics over OTLP (the CLI's ``--otel``); needs the SDK and an
    exporter: ``pip install opentelemetry-sdk opentelemetry-exporter-otlp``."""
    from asynctg.errors import ConfigError

    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[import-not-found]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            "--otel needs the OpenTelemetry SDK and the OTLP exporter: pip install "
            "'asynctg[otel]' opentelemetry-sdk opentelemetry-exporter-otlp (endpoint: "
            "OTEL_EXPORTER_OTLP_ENDPOINT)"
        ) from exc
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    assert _trace is not None and _metrics is not None
    _trace.set_tracer_provider(tracer_provider)
    _metrics.set_meter_provider(meter_provider)
    configure(tracer_provider=None, meter_provider=None)
