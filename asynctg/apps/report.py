"""Run reports: ``report.json`` (everything) and ``report.html`` (one self-contained page).

The page needs nothing but a browser: the accuracy plot is inline SVG drawn here, the prompt
(or program) history is a word-level diff per step made with ``difflib``, and usage and cost
are a table. Both files are written atomically. Model-written text on the page is HTML-escaped
and stripped of control characters (``progress.printable``).
"""

from __future__ import annotations

import difflib
import html
import itertools
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asynctg.apps.checkpoint import atomic_write_text, probe_writable
from asynctg.apps.progress import printable

__all__ = ["diff_html", "line_chart_svg", "prepare_report_dir", "write_report", "xy_chart_svg"]

_COLORS = ("#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#495057")

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em;
       color: #212529; }
h1 { font-size: 1.5em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #dee2e6; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #e9ecef; text-align: left;
         vertical-align: top; }
th { background: #f8f9fa; }
pre { white-space: pre-wrap; word-break: break-word; background: #f8f9fa; padding: 0.8em;
      border-radius: 4px; }
del { background: #ffe3e3; color: #c92a2a; } ins { background: #d3f9d8; color: #2b8a3e;
      text-decoration: none; }
.note { color: #868e96; }
"""


def prepare_report_dir(path: str | Path) -> Path:
    """Create the report folder if needed and check it is writable (``ConfigError`` if not)."""
    folder = Path(path)
    probe_writable(folder, "report folder")
    return folder


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"(\s+)", text) if t]


def diff_html(old: str, new: str) -> str:
    """A word-level diff of two texts as HTML: removed words in ``<del>``, added in ``<ins>``."""
    a, b = _tokens(old), _tokens(new)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{html.escape(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{html.escape(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def line_chart_svg(
    series: Mapping[str, Sequence[float | None]],
    *,
    x_labels: Sequence[str],
    y_label: str = "accuracy",
    width: int = 720,
    height: int = 320,
    y_range: tuple[float, float] = (0.0, 1.0),
) -> str:
    """An inline SVG line chart, one line per series over the labelled x positions, points
    where known; values are clipped to ``y_range`` (default: [0, 1], accuracies)."""
    xy = {
        name: [(float(i), v) for i, v in enumerate(values) if v is not None]
        for name, values in series.items()
    }
    return xy_chart_svg(
        xy,
        x_ticks=[(float(i), label) for i, label in enumerate(x_labels)],
        x_range=(0.0, float(max(1, len(x_labels) - 1))),
        y_range=y_range,
        y_label=y_label,
        width=width,
        height=height,
        center_single=len(x_labels) <= 1,
    )


def xy_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    x_label: str = "",
    y_label: str = "",
    width: int = 720,
    height: int = 320,
    markers: bool = True,
    center_single: bool = False,
) -> str:
    """An inline SVG chart of (x, y) lines, e.g. dose-volume histograms; ranges default to the
    data's. ``x_ticks``: (position, label) pairs, else five evenly spaced numbers."""
    left, right, top, bottom = 56, 150, 16, 44 + (16 if x_label else 0)
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p[0] for points in series.values() for p in points] or [0.0, 1.0]
    ys = [p[1] for points in series.values() for p in points] or [0.0, 1.0]
    x0, x1 = x_range or (min(xs), max(xs))
    y0, y1 = y_range or (min(ys), max(ys))
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x0 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y0 + 0.5

    def x(v: float) -> float:
        if center_single:
            return left + plot_w / 2
        return left + plot_w * (v - x0) / (x1 - x0)

    def y(v: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, (v - y0) / (y1 - y0))))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(y_label)} chart">'
    ]
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        parts.append(
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" '
            'stroke="#e9ecef"/>'
            f'<text x="{left - 8}" y="{y(v) + 4:.1f}" font-size="12" text-anchor="end" '
            f'fill="#495057">{_tick(v)}</text>'
        )
    ticks = (
        list(x_ticks)
        if x_ticks is not None
        else [(x0 + (x1 - x0) * k / 4, _tick(x0 + (x1 - x0) * k / 4)) for k in range(5)]
    )
    step = max(1, len(ticks) // 12)
    for i, (position, label) in enumerate(ticks):
        if i % step == 0 or i == len(ticks) - 1:
            parts.append(
                f'<text x="{x(position):.1f}" y="{top + plot_h + 18}" font-size="12" '
                f'text-anchor="middle" fill="#495057">{html.escape(label)}</text>'
            )
    if x_label:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 38}" font-size="12" '
            f'text-anchor="middle" fill="#495057">{html.escape(x_label)}</text>'
        )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2:.1f}" font-size="12" fill="#495057" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})" text-anchor="middle">'
        f"{html.escape(y_label)}</text>"
    )
    for s, (name, values) in enumerate(series.items()):
        color = _COLORS[s % len(_COLORS)]
        points = [(x(px), y(py)) for px, py in values]
        if not points:
            continue
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
        if markers:
            for px, py in points:
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}"/>')
        ly = top + 14 + 20 * s
        parts.append(
            f'<rect x="{left + plot_w + 16}" y="{ly - 9}" width="12" height="12" '
            f'fill="{color}"/><text x="{left + plot_w + 34}" y="{ly + 2}" font-size="13" '
            f'fill="#212529">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "&ndash;"
    return html.escape(str(value))


def _usage_section(usage: Mapping[str, Any]) -> str:
    keys = (
        ("provider_calls", "calls answered by the provider"),
        ("calls", "calls (including journal replays)"),
        ("cache_hits", "replayed from the journal or cache"),
        ("requests", "HTTP requests (retries included)"),
        ("rate_limited", "429 answers"),
        ("retries", "retries"),
        ("prompt_tokens", "prompt tokens"),
        ("completion_tokens", "completion tokens"),
        ("cost_usd", "cost (US$)"),
        ("seconds", "wall time (s)"),
    )
    rows = [(label, usage.get(key)) for key, label in keys if key in usage]
    return "<h2>Usage and cost</h2>" + _table(rows)


def _aggregation_cell(report: Mapping[str, Any] | None) -> str:
    """How a step's feedback reached the optimizer, in a few words."""
    if not report:
        return ""
    how = (
        f"{report['feedbacks_in']} blocks"
        if report.get("strategy") == "concat"
        else f"{report['feedbacks_in']} reduced in {report['levels']} levels "
        f"({report['calls'] - 1} calls)"
    )
    return f"{how}; prompt ~{report['prompt_tokens']} tokens"


def _rejected_cell(row: Mapping[str, Any]) -> str:
    """The "rejected" column: "yes" and the candidate's score, for a step validation rejected."""
    if not row.get("reverted"):
        return ""
    rejected = row.get("rejected")
    score = rejected.get("validation_accuracy") if isinstance(rejected, Mapping) else None
    return f"yes ({score:.3f})" if isinstance(score, int | float) else "yes"


def _prompt_sections(result: Mapping[str, Any]) -> str:
    history = result.get("history", [])
    labels = [str(row["step"]) for row in history]
    series = {
        "test": [row.get("test_accuracy") for row in history],
        "validation": [row.get("validation_accuracy") for row in history],
        "train batch": [row.get("train_accuracy") for row in history],
    }
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    out = ["<h2>Accuracy per step</h2>"]
    out.append(line_chart_svg(series, x_labels=labels) if series else "<p>No evaluation.</p>")
    rows = [
        (
            row["step"],
            row.get("train_accuracy"),
            row.get("validation_accuracy"),
            row.get("test_accuracy"),
            _rejected_cell(row),
            _aggregation_cell(row.get("aggregation")),
        )
        for row in history
    ]
    header = ("step", "train batch", "validation", "test", "rejected", "feedback to optimizer")
    out.append(_table(rows, header))
    out.append("<h2>The prompt, step by step</h2>")
    if history:
        out.append(f"<h3>Step 0 (start)</h3><pre>{html.escape(str(history[0]['prompt']))}</pre>")
    for before, row in itertools.pairwise(history):
        rejected = row.get("rejected")
        if isinstance(rejected, Mapping):
            # the candidate validation turned down, with its score: what was tried, not only
            # what was kept
            score = rejected.get("validation_accuracy")
            shown = f"{score:.3f}" if isinstance(score, int | float) else "n/a"
            out.append(
                f"<h3>Step {row['step']} &mdash; rejected by validation (validation accuracy "
                f"{shown}), previous prompt kept</h3><p>The rejected candidate:</p>"
                f"<pre>{diff_html(str(before['prompt']), str(rejected.get('prompt', '')))}</pre>"
            )
            continue
        kept = row.get("reverted")
        note = " &mdash; rejected by validation, previous prompt kept" if kept else ""
        out.append(
            f"<h3>Step {row['step']}{note}</h3>"
            f"<pre>{diff_html(str(before['prompt']), str(row['prompt']))}</pre>"
        )
    final = html.escape(str(result.get("final_prompt", "")))
    out.append(f"<h2>Final prompt</h2><pre>{final}</pre>")
    if result.get("gepa"):
        from asynctg.apps.prompt_gepa import gepa_sections

        out.append(gepa_sections(result["gepa"]))
    return "".join(out)


def _solution_sections(result: Mapping[str, Any]) -> str:
    labels = list(result.get("labels", []))
    out = ["<h2>Accuracy per round</h2>"]
    out.append(line_chart_svg({"accuracy": list(result.get("accuracy", []))}, x_labels=labels))
    pairs = list(zip(labels, result.get("accuracy", []), strict=False))
    out.append(_table(pairs, ("round", "accuracy")))
    rows: list[tuple[Any, ...]] = []
    for q in result.get("questions", []):
        if "error" in q:
            rows.append((q["index"] + 1, q.get("answer"), "", "", f"error: {q['error'][:200]}"))
        else:
            letters = " ".join(str(x) for x in q["letters"])
            right = "yes" if q["scores"][-1] else "no"
            rows.append((q["index"] + 1, q["answer"], letters, q["vote"], right))
    out.append("<h2>Questions</h2>")
    out.append(_table(rows, ("question", "answer", "letters by round", "vote", "vote right")))
    return "".join(out)


def _code_sections(result: Mapping[str, Any]) -> str:
    rates = list(result.get("pass_rate_by_round", []))
    labels = ["first", *(f"round {i}" for i in range(1, len(rates)))]
    out = ["<h2>Share of problems passing every test, per round</h2>"]
    out.append(line_chart_svg({"pass rate": rates}, x_labels=labels, y_label="pass rate"))
    rows: list[tuple[Any, ...]] = []
    for p in result.get("problems", []):
        if "error" in p:
            rows.append((p["task_id"], "", "", f"error: {p['error'][:200]}"))
        else:
            rows.append(
                (
                    p["task_id"],
                    len(p["rounds"]) - 1,
                    "yes" if p["first_passed"] else "no",
                    "yes" if p["final_passed"] else "no",
                )
            )
    out.append("<h2>Problems</h2>")
    out.append(_table(rows, ("problem", "rewrites", "first passes", "final passes")))
    for p in result.get("problems", []):
        if "error" in p or not p.get("rounds"):
            continue
        out.append(f"<h3>{html.escape(str(p['task_id']))}: first program to final</h3>")
        out.append(f"<pre>{diff_html(p['rounds'][0]['code'], p['final_code'])}</pre>")
        out.append(f"<pre>{html.escape(p['rounds'][-1]['feedback'])}</pre>")
    return "".join(out)


def _design_sections(command: str, result: Mapping[str, Any]) -> str:
    """Molecule and radiotherapy runs: per-iteration charts and each design's trajectory."""
    designs = [c for c in result.get("candidates", []) if c.get("trajectory")]
    width = max((len(c["trajectory"]) for c in designs), default=1)
    labels = [str(i) for i in range(width)]

    def series(value: Any) -> dict[str, list[float | None]]:
        return {f"design {c['index'] + 1}": [value(r) for r in c["trajectory"]] for c in designs}

    def chart(title: str, values: dict[str, list[float | None]], label: str, pad: float) -> str:
        """A chart of ``values`` spanning the data (padded), or nothing without data."""
        known = [v for vs in values.values() for v in vs if v is not None]
        if not known:
            return ""
        span = (min(known) - pad, max(known) + pad)
        svg = line_chart_svg(values, x_labels=labels, y_label=label, y_range=span)
        return f"<h2>{html.escape(title)}</h2>{svg}"

    out: list[str] = []
    if command == "molecule":
        vina = series(lambda r: r.get("vina"))
        title = "Vina score per iteration (kcal/mol, lower binds more strongly)"
        out.append(chart(title, vina, "Vina", 0.5))
        out.append("<h2>QED drug-likeness per iteration</h2>")
        out.append(line_chart_svg(series(lambda r: r.get("qed")), x_labels=labels, y_label="QED"))
    else:
        for key, label in (
            ("ptv_d95_gy", "target D95 (Gy)"),
            ("core_mean_gy", "Core mean dose (Gy)"),
        ):
            values = series(lambda r, key=key: (r.get("metrics") or {}).get(key))
            out.append(chart(f"{label} per iteration", values, label, 1.0))
    for c in result.get("candidates", []):
        out.append(f"<h2>Design {c['index'] + 1}</h2>")
        if "error" in c:
            out.append(f"<p>error: {html.escape(str(c['error'])[:500])}</p>")
        if command == "molecule":
            out.append(_molecule_trajectory(c.get("trajectory", [])))
        else:
            out.append(_plan_trajectory(c.get("trajectory", [])))
    return "".join(out)


def _molecule_trajectory(rows: Sequence[Mapping[str, Any]]) -> str:
    try:
        from asynctg.apps.docking import depict_svg
    except ImportError:  # pragma: no cover - the run needed RDKit; a report may be rebuilt
        depict_svg = None  # type: ignore[assignment]
    table = [
        "<table><tr><th>iteration</th><th>molecule</th><th>SMILES</th><th>Vina</th>"
        "<th>QED</th><th>Lipinski violations</th></tr>"
    ]
    for r in rows:
        picture = depict_svg(r["smiles"]) if depict_svg is not None else None
        shown = (
            picture if picture else f'<span class="note">{html.escape(str(r.get("error")))}</span>'
        )
        table.append(
            f"<tr><td>{r['iteration']}</td><td>{shown}</td><td><code>{html.escape(r['smiles'])}"
            f"</code></td><td>{_cell(r.get('vina'))}</td><td>{_cell(r.get('qed'))}</td>"
            f"<td>{_cell(r.get('lipinski_violations'))}</td></tr>"
        )
    table.append("</table>")
    return "".join(table)


def _plan_trajectory(rows: Sequence[Mapping[str, Any]]) -> str:
    out: list[str] = []
    curves: dict[str, list[tuple[float, float]]] = {}
    scored = [r for r in rows if r.get("dvh")]
    for r in scored[:1] + scored[-1:] if len(scored) > 1 else scored:
        for structure in ("OuterTarget", "Core"):
            dvh = r["dvh"].get(structure)
            if dvh:
                name = f"{structure}, iteration {r['iteration']}"
                curves[name] = list(zip(dvh["dose_gy"], dvh["volume_pct"], strict=False))
    if curves:
        out.append(
            xy_chart_svg(
                curves,
                y_range=(0.0, 100.0),
                x_label="dose (Gy)",
                y_label="volume (%)",
                markers=False,
            )
        )
    header = ("iteration", "objectives", "target D95", "target HI", "Core mean", "Core max")
    table = []
    for r in rows:
        m = r.get("metrics") or {}
        objectives = json.dumps(r.get("objectives"))
        if not r.get("valid"):
            objectives += " — rejected: " + "; ".join(map(str, r.get("problems") or []))
        table.append(
            (
                r["iteration"],
                objectives,
                m.get("ptv_d95_gy"),
                m.get("ptv_homogeneity_index"),
                m.get("core_mean_gy"),
                m.get("core_max_gy"),
            )
        )
    out.append(_table(table, header))
    return "".join(out)


def write_report(
    folder: str | Path,
    command: str,
    result: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` for ``command`` ("optimize", "solve", "code").

    ``result`` is the loop's ``to_json()``; ``meta`` says what ran (task, models, settings).
    Returns the two paths.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    payload = {
        "command": command,
        "generated": generated,
        "meta": dict(meta),
        "result": dict(result),
    }
    json_path = folder / "report.json"
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str) + "\n", mode=0o644)

    title = f"asynctg {command}: {meta.get('task', result.get('task', ''))}"
    summary = [(k, v) for k, v in meta.items() if not isinstance(v, dict | list)]
    summary += [("status", result.get("status")), ("stopped by", result.get("stop_reason"))]
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="note">generated {generated}</p>']
    body.append(_table(summary))
    if command == "solve":
        body.append(_solution_sections(result))
    elif command == "code":
        body.append(_code_sections(result))
    elif command in ("molecule", "radiotherapy"):
        body.append(_design_sections(command, result))
    else:
        body.append(_prompt_sections(result))
    body.append(_usage_section(result.get("usage", {})))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
    html_path = folder / "report.html"
    # html.escape leaves control characters (a model's ESC sequences) as they are: stripped.
    atomic_write_text(html_path, printable(page), mode=0o644)
    return json_path, html_path
