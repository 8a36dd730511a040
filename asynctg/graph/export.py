"""Graph export as DOT or Mermaid text (no graphviz dependency)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asynctg.graph.variable import Variable

__all__ = ["to_dot", "to_mermaid"]


def _label(v: Variable, show_gradients: bool, width: int = 60) -> str:
    value = v.get_short_value(6)
    if len(value) > width:
        value = value[: width - 3] + "..."
    parts = [f"role: {v.role_description}", f"value: {value}"]
    if v.grad_fn is not None:
        parts.append(f"grad_fn: {v.grad_fn.name}")
    if show_gradients and v.gradients:
        text = v.get_gradient_text()
        parts.append("feedback: " + (text[: width - 3] + "..." if len(text) > width else text))
    return "\n".join(parts)


def to_dot(root: Variable, *, show_gradients: bool = False) -> str:
    """``digraph`` text with one box per variable and an edge from each input to its output."""
    nodes = list(root.walk())
    ids = {id(v): f"v{i}" for i, v in enumerate(nodes)}
    lines = ["digraph asynctg {", "  rankdir=TB;", "  node [shape=box, fontsize=9];"]
    for v in nodes:
        label = _label(v, show_gradients).replace("\\", "\\\\").replace('"', '\\"')
        label = label.replace("\n", "\\n")
        style = ', style=filled, fillcolor="#e8e0ff"' if v.requires_grad else ""
        lines.append(f'  {ids[id(v)]} [label="{label}"{style}];')
    for v in nodes:
        for p in v.predecessors:
            lines.append(f"  {ids[id(p)]} -> {ids[id(v)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(root: Variable, *, show_gradients: bool = False) -> str:
    """A ``flowchart TD`` with one node per variable and an arrow from each input to its output."""
    nodes = list(root.walk())
    ids = {id(v): f"v{i}" for i, v in enumerate(nodes)}
    lines = ["flowchart TD"]
    for v in nodes:
        label = _label(v, show_gradients).replace('"', "#quot;").replace("\n", "<br/>")
        lines.append(f'  {ids[id(v)]}["{label}"]')
    for v in nodes:
        for p in v.predecessors:
            lines.append(f"  {ids[id(p)]} --> {ids[id(v)]}")
    return "\n".join(lines) + "\n"
