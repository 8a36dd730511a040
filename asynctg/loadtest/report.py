"""``asynctg bench --report DIR``: report.json and a self-contained report.html (inline SVG):
the latency distributions, throughput and latency against load with the knee marked, and a
timeline of requests in flight and 429s. With matplotlib installed, report.png has the same
four plots in one picture."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asynctg.output.files import atomic_write_text
from asynctg.output.svg import xy_chart_svg
from asynctg.output.text import printable

__all__ = ["knee_note", "level_notes", "write_report"]

_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #e9ecef;"
    "text-align:right}th{background:#f8f9fa}h2{margin-top:2em;border-bottom:1px solid #dee2e6}"
    ".note{color:#868e96}"
)


def _cdf(values: Sequence[float]) -> list[tuple[float, float]]:
    ordered = sorted(values)
    n = len(ordered)
    step = max(1, n // 200)
    return [
        (1000 * v, 100.0 * (i + 1) / n)
        for i, v in enumerate(ordered)
        if i % step == 0 or i == n - 1
    ]


def _ms(value: float | None) -> str:
    return "&ndash;" if value is None else f"{1000 * value:.0f}"


def _distributions(row: Mapping[str, Any]) -> dict[str, list[tuple[float, float]]]:
    samples = [s for s in row.get("samples", []) if s.ok]
    out = {"end-to-end": _cdf([s.latency for s in samples])}
    ttft = [s.ttft for s in samples if s.ttft is not None]
    if ttft:
        out["time to first token"] = _cdf(ttft)
    return out


def write_report(folder: str | Path, result: Mapping[str, Any]) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public = {
        **result,
        "levels": [
            {k: v for k, v in r.items() if k != "samples"} for r in result.get("levels", [])
        ],
    }
    json_path = folder / "report.json"
    atomic_write_text(json_path, json.dumps(public, indent=2, default=str) + "\n", mode=0o644)
    body = [
        f"<h1>asynctg bench: {html.escape(str(result['model']))}</h1>",
        f'<p class="note">{html.escape(str(result["endpoint"]))}, workload '
        f"{html.escape(result['workload'])}, generated {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
    ]
    levels = list(result.get("levels", []))
    if levels:
        body.append(_levels_sections(result, levels))
    if "step" in result:
        body.append(_step_section(result["step"]))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>asynctg bench'
        f"</title><style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
    html_path = folder / "report.html"
    atomic_write_text(html_path, printable(page), mode=0o644)  # no control characters from replies
    _png(folder / "report.png", result, levels)
    return json_path, html_path


def level_notes(row: Mapping[str, Any], kind: str) -> list[str]:
    """What to say about one load level beside its numbers (table and report alike)."""
    at = f"{kind} {row['level']:g}"
    notes = []
    if row.get("errors"):
        notes.append(f"{at}: failed requests by kind: {row['errors']}")
    if row.get("client_limited"):
        notes.append(
            f"{at}: the load generator used {row['client_busy']:.0%} of a core: the client, "
            "not the server, limited this level"
        )
    if row.get("usage_estimated"):
        notes.append(f"{at}: the server sent no usage; tokens estimated")
    for key, label in (("rpm_used", "rpm"), ("tpm_used", "tpm")):
        if key in row:
            notes.append(f"{at}: {row[key]:.0%} of the {label} budget used")
    return notes


def knee_note(result: Mapping[str, Any], kind: str) -> str | None:
    """The sweep's knee under its objective, in words (None without an objective)."""
    if "knee" not in result:
        return None
    slo, knee = result["slo"], result["knee"]
    objective = f"{slo['metric']} p99 <= {slo['p99_s']:g} s"
    if knee is None:
        return f"knee: none (every level missed {objective})"
    return f"knee: {kind} {knee:g}, the highest load meeting {objective}"


def _levels_sections(result: Mapping[str, Any], levels: Sequence[Mapping[str, Any]]) -> str:
    kind = result.get("load_kind", "concurrency")
    out = ["<h2>Summary</h2><table><tr>"]
    heads = (
        kind,
        "req/s",
        "in tok/s",
        "out tok/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean ms",
        "TTFT p50",
        "TTFT p99",
        "ITL p50",
        "ITL p99",
        "429s",
        "failed",
    )
    out.append("".join(f"<th>{h}</th>" for h in heads) + "</tr>")
    for r in levels:
        lat, ttft, itl = r["latency_s"], r["ttft_s"], r["itl_s"]
        cells = (
            f"{r['level']:g}",
            f"{r['requests_per_s']:.1f}",
            f"{r['input_tokens_per_s']:.0f}",
            f"{r['output_tokens_per_s']:.0f}",
            _ms(lat["p50"]),
            _ms(lat["p90"]),
            _ms(lat["p99"]),
            _ms(lat["mean"]),
            _ms(ttft["p50"]),
            _ms(ttft["p99"]),
            _ms(itl["p50"]),
            _ms(itl["p99"]),
            str(r["http_429"]),
            str(r["failed"]),
        )
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    notes = [note for r in levels for note in level_notes(r, kind)]
    knee = knee_note(result, kind)
    if knee is not None:
        notes.append(knee)
    out.extend(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    last = levels[-1]
    out.append(f"<h2>Latency distribution ({kind} {last['level']:g})</h2>")
    out.append(
        xy_chart_svg(
            _distributions(last),
            y_range=(0, 100),
            x_label="ms",
            y_label="% of requests",
            markers=False,
        )
    )
    if len(levels) > 1:
        xs = [float(r["level"]) for r in levels]
        out.append(f"<h2>Throughput and p99 latency against {kind}</h2>")
        series: dict[str, list[tuple[float, float]]] = {
            "requests/s": [(x, r["requests_per_s"]) for x, r in zip(xs, levels, strict=True)]
        }
        out.append(xy_chart_svg(series, x_label=kind, y_label="requests/s"))
        p99 = {
            "p99 latency (ms)": [
                (x, 1000 * (r["latency_s"]["p99"] or 0)) for x, r in zip(xs, levels, strict=True)
            ]
        }
        if result.get("knee") is not None:
            knee_row = next(r for r in levels if r["level"] == result["knee"])
            p99["knee"] = [(float(result["knee"]), 1000 * (knee_row["latency_s"]["p99"] or 0))]
            p99["objective"] = [
                (xs[0], 1000 * result["slo"]["p99_s"]),
                (xs[-1], 1000 * result["slo"]["p99_s"]),
            ]
        out.append(xy_chart_svg(p99, x_label=kind, y_label="ms"))
    timeline = last["timeline"]
    out.append(f"<h2>Requests in flight and 429s over time ({kind} {last['level']:g})</h2>")
    series = {"in flight": [(float(t), float(n)) for t, n in timeline["in_flight"]]}
    if timeline["rate_limited_at"]:
        series["429 answers"] = [(float(t), 0.0) for t in timeline["rate_limited_at"]]
    out.append(xy_chart_svg(series, x_label="seconds", y_label="requests", markers=False))
    return "".join(out)


def _step_section(step: Mapping[str, Any]) -> str:
    rows = [
        ("steps x batch", f"{step['steps']} x {step['batch_size']}"),
        ("calls", step["calls"]),
        ("wall (s)", f"{step['wall_s']:.2f}"),
        ("step time, mean (s)", _num(step.get("step_mean_s"))),
        ("critical-path bound (s)", _num(step.get("critical_path_bound_s"))),
        ("budget floor (s)", _num(step.get("budget_floor_s"))),
        ("429s / retries", f"{step['rate_limited']} / {step['retries']}"),
        ("calls by kind", step["calls_by_kind"]),
    ]
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    timeline = step["timeline"]
    series = {"in flight": [(float(t), float(n)) for t, n in timeline["in_flight"]]}
    if timeline["rate_limited_at"]:
        series["429 answers"] = [(float(t), 0.0) for t in timeline["rate_limited_at"]]
    chart = xy_chart_svg(series, x_label="seconds", y_label="requests", markers=False)
    return f"<h2>Optimization steps</h2><table>{table}</table><h2>Requests in flight</h2>{chart}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _png(path: Path, result: Mapping[str, Any], levels: Sequence[Mapping[str, Any]]) -> None:
    """The four plots in one PNG, when matplotlib is installed (it is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    kind = result.get("load_kind", "concurrency")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    if levels:
        last = levels[-1]
        for name, points in _distributions(last).items():
            axes[0][0].plot([p[0] for p in points], [p[1] for p in points], label=name)
        axes[0][0].set(
            title=f"latency CDF ({kind} {last['level']:g})", xlabel="ms", ylabel="% of requests"
        )
        axes[0][0].legend()
        xs = [r["level"] for r in levels]
        axes[0][1].plot(xs, [r["requests_per_s"] for r in levels], marker="o")
        axes[0][1].set(title=f"throughput vs {kind}", xlabel=kind, ylabel="requests/s")
        axes[1][0].plot(
            xs, [1000 * (r["latency_s"]["p99"] or 0) for r in levels], marker="o", label="p99"
        )
        axes[1][0].plot(
            xs, [1000 * (r["latency_s"]["p50"] or 0) for r in levels], marker="o", label="p50"
        )
        if result.get("knee") is not None:
            axes[1][0].axvline(result["knee"], color="red", linestyle="--", label="knee")
            axes[1][0].axhline(
                1000 * result["slo"]["p99_s"], color="gray", linestyle=":", label="objective"
            )
        axes[1][0].set(title=f"latency vs {kind}", xlabel=kind, ylabel="ms")
        axes[1][0].legend()
        if len(xs) > 1 and max(xs) / max(min(xs), 1e-9) > 20:
            for ax in (axes[0][1], axes[1][0]):
                ax.set_xscale("log")
        timeline = last["timeline"]
    else:
        timeline = result["step"]["timeline"]
    points = timeline["in_flight"]
    axes[1][1].plot([p[0] for p in points], [p[1] for p in points], label="in flight")
    if timeline["rate_limited_at"]:
        axes[1][1].plot(
            timeline["rate_limited_at"], [0] * len(timeline["rate_limited_at"]), "rx", label="429"
        )
    axes[1][1].set(title="requests in flight", xlabel="seconds", ylabel="requests")
    axes[1][1].legend()
    fig.suptitle(f"asynctg bench: {result['model']} ({result['workload']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
