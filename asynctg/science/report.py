"""What a design run's report shows (``molecule``, ``radiotherapy``): charts per iteration
and each design's trajectory (molecules drawn with RDKit when installed, dose-volume curves of
the first and last plan). ``asynctg.apps.report.write_report`` puts them on the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from asynctg.output.svg import line_chart_svg, xy_chart_svg
from asynctg.runs.report import cell_html, table_html

__all__ = ["design_sections"]


def design_sections(command: str, result: Mapping[str, Any]) -> str:
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


def _depiction() -> Callable[[str], str | None] | None:
    """The molecule drawer, or None where RDKit is missing (a report may be rebuilt elsewhere)."""
    try:
        from asynctg.science.docking import depict_svg
    except ImportError:  # pragma: no cover - the run needed RDKit
        return None
    return depict_svg


def _molecule_trajectory(rows: Sequence[Mapping[str, Any]]) -> str:
    depict_svg = _depiction()
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
            f"</code></td><td>{cell_html(r.get('vina'))}</td><td>{cell_html(r.get('qed'))}</td>"
            f"<td>{cell_html(r.get('lipinski_violations'))}</td></tr>"
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
    out.append(table_html(table, header))
    return "".join(out)
