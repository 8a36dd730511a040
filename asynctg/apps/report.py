"""The run report of every command: what each of the paper's loops shows, and the dispatch.

``write_report(folder, command, result, meta)`` writes ``report.json`` and ``report.html``
through ``asynctg.runs.report`` (the page, its tables and the usage section) with the body drawn
for ``command``: accuracy per step and the prompt's diffs (``optimize``, also GEPA's search),
accuracy per round and the votes (``solve``), pass rates and program diffs (``code``); the
design loops' sections come from ``asynctg.science.report``.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asynctg.output.svg import line_chart_svg, xy_chart_svg
from asynctg.runs.report import (
    diff_html,
    prepare_report_dir,
    table_html,
    write_report_files,
)
from asynctg.science.report import design_sections

__all__ = ["diff_html", "line_chart_svg", "prepare_report_dir", "write_report", "xy_chart_svg"]


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
    out.append(table_html(rows, header))
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
    out.append(table_html(pairs, ("round", "accuracy")))
    rows: list[tuple[Any, ...]] = []
    for q in result.get("questions", []):
        if "error" in q:
            rows.append((q["index"] + 1, q.get("answer"), "", "", f"error: {q['error'][:200]}"))
        else:
            letters = " ".join(str(x) for x in q["letters"])
            right = "yes" if q["scores"][-1] else "no"
            rows.append((q["index"] + 1, q["answer"], letters, q["vote"], right))
    out.append("<h2>Questions</h2>")
    out.append(table_html(rows, ("question", "answer", "letters by round", "vote", "vote right")))
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
    out.append(table_html(rows, ("problem", "rewrites", "first passes", "final passes")))
    for p in result.get("problems", []):
        if "error" in p or not p.get("rounds"):
            continue
        out.append(f"<h3>{html.escape(str(p['task_id']))}: first program to final</h3>")
        out.append(f"<pre>{diff_html(p['rounds'][0]['code'], p['final_code'])}</pre>")
        out.append(f"<pre>{html.escape(p['rounds'][-1]['feedback'])}</pre>")
    return "".join(out)


def write_report(
    folder: str | Path,
    command: str,
    result: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` for ``command`` ("optimize", "solve", "code",
    "molecule", "radiotherapy").

    ``result`` is the loop's ``to_json()``; ``meta`` says what ran (task, models, settings).
    Returns the two paths.
    """
    if command == "solve":
        sections = _solution_sections(result)
    elif command == "code":
        sections = _code_sections(result)
    elif command in ("molecule", "radiotherapy"):
        sections = design_sections(command, result)
    else:
        sections = _prompt_sections(result)
    return write_report_files(folder, command, result, meta, sections)
