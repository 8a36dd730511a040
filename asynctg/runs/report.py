"""Run reports: ``report.json`` (everything) and ``report.html`` (one self-contained page).

The page needs nothing but a browser: plots are inline SVG (``asynctg.output.svg``), a prompt
(or program) history is a word-level diff per step made with ``difflib``, and usage and cost
are a table. Both files are written atomically. Model-written text on the page is HTML-escaped
and stripped of control characters (``asynctg.output.printable``).

This module owns the page (its frame, tables, diffs and the usage section); what each loop
shows is drawn by that loop's package (``asynctg.apps.report`` for the paper's loops and the
dispatch by command, ``asynctg.science.report`` for the design loops), which hands the body
here as ``sections``.
"""

from __future__ import annotations

import difflib
import html
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asynctg.output.files import atomic_write_text, probe_writable
from asynctg.output.svg import line_chart_svg, xy_chart_svg
from asynctg.output.text import printable

__all__ = [
    "cell_html",
    "diff_html",
    "line_chart_svg",
    "prepare_report_dir",
    "table_html",
    "write_report_files",
    "xy_chart_svg",
]


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


def table_html(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """An HTML table of ``rows`` (cells escaped, floats to four significant digits)."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell_html(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def cell_html(value: Any) -> str:
    """One table cell's text: floats shortened, ``None`` as a dash, the rest escaped."""
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
        ("cached_tokens", "prompt tokens read from the provider's prompt cache"),
        ("cache_write_tokens", "prompt tokens written to the provider's prompt cache"),
        ("cost_usd", "cost (US$, cached reads and writes at their prices, each call at its tier)"),
        ("flex_calls", "evaluation calls served at flex"),
        ("flex_fallbacks", "flex calls sent at standard past their flex deadline"),
        ("batch_calls", "evaluation calls served in a provider batch"),
        ("saved_usd", "saved by flex and batch against standard (US$)"),
        ("seconds", "wall time (s)"),
    )
    rows = [(label, usage.get(key)) for key, label in keys if key in usage]
    return "<h2>Usage and cost</h2>" + table_html(rows)


def write_report_files(
    folder: str | Path,
    command: str,
    result: Mapping[str, Any],
    meta: Mapping[str, Any],
    sections: str,
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` for a run of ``command``.

    ``result`` is the loop's ``to_json()``; ``meta`` says what ran (task, models, settings);
    ``sections`` is the page's body drawn by the loop's package (escaped HTML). Returns the two
    paths.
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
    body.append(table_html(summary))
    body.append(sections)
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
