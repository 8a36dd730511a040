"""Radiotherapy treatment planning (the TextGrad paper's §3.5): a plan's objective set (weights
and dose limits per structure) rewritten by the optimizer until the plan meets the clinical
goals.

Each iteration optimises the beam fluences of a coarse photon IMRT plan of the AAPM TG-119
C-shape phantom for the current objective set (pyRadPlan; ``asynctg.science.dosimetry``) in a
worker, and an LLM critiques the resulting dose metrics (target coverage and homogeneity,
the core's mean, maximum and D10) against the goals; the feedback flows back to the objective
set and the optimizer proposes a new one. A set the evaluator rejects (unreadable JSON, an
unknown structure, a weight out of range, JSON nested too deep or a number too long) is
evaluated as rejected, with the reasons, and that becomes the feedback; so does a plan the
optimizer left degenerate (no step taken, no dose in the target). A plan whose optimizer hit
its iteration cap is kept, marked ``converged: False``, and the loss is told. Several starting
sets run at once (``asynctg.science.design``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from asynctg import prompts
from asynctg.engine.client import ChatEngine
from asynctg.runs.checkpoint import Checkpoint
from asynctg.runs.loop import EventSink
from asynctg.science import dosimetry
from asynctg.science.design import DesignConfig, Designer, DesignResult, optimize_designs

__all__ = ["GOALS", "optimize_plans", "plan_designer", "starting_sets"]

#: TG-119's C-shape goals (its "easier" variant), as the loss is told them.
GOALS = (
    "target D95 at least {rx:g} Gy (coverage) and D2 at most {hot:g} Gy (homogeneity); Core "
    "D10 at most {core:g} Gy, with its mean and maximum as low as coverage allows; no hot spots "
    "in the BODY outside the target."
)

_LABELS = {
    "ptv_d95_gy": "target D95 (Gy)",
    "ptv_d2_gy": "target D2 (Gy)",
    "ptv_d98_gy": "target D98 (Gy)",
    "ptv_mean_gy": "target mean (Gy)",
    "ptv_min_gy": "target min (Gy)",
    "ptv_max_gy": "target max (Gy)",
    "ptv_v95_pct": "target volume receiving 95% of the prescription (%)",
    "ptv_homogeneity_index": "target homogeneity index (D2-D98)/D50, lower is better",
    "core_mean_gy": "Core mean (Gy)",
    "core_max_gy": "Core max (Gy)",
    "core_d10_gy": "Core D10 (Gy)",
    "body_mean_gy": "BODY mean (Gy)",
    "body_max_gy": "BODY max (Gy)",
    "body_d10_gy": "BODY D10 (Gy)",
}


def goals(setup: dosimetry.PlanSetup) -> str:
    rx = setup.prescription_gy
    return GOALS.format(rx=rx, hot=1.1 * rx, core=0.5 * rx)


def starting_sets(k: int, setup: dosimetry.PlanSetup) -> list[str]:
    """``k`` distinct starting objective sets, as the JSON text the optimizer rewrites."""
    return [json.dumps(s) for s in dosimetry.starting_points(k, setup)]


def render(text: str, result: dict[str, Any]) -> str:
    """The evaluation as the loss reads it: the set, then the plan's metrics or why not."""
    if not result.get("valid"):
        problems = result.get("problems") or [result.get("error")]
        verdict = (
            "The plan made for this objective set is degenerate, not a usable plan"
            if result.get("degenerate")
            else "The objective set was rejected; no plan was made"
        )
        return f"Objective set: {text}\n{verdict}:\n" + "\n".join(f"- {p}" for p in problems)
    metrics = result["metrics"]
    lines = [f"Objective set: {text}", "Resulting plan:"]
    for key, label in _LABELS.items():
        if key in metrics:
            lines.append(f"- {label}: {metrics[key]:.2f}")
    lines.extend(f"Note: {w}" for w in result.get("warnings") or [])
    return "\n".join(lines)


def record(text: str, result: dict[str, Any]) -> dict[str, Any]:
    """One trajectory row: the pinned ``objectives`` and ``metrics``, and the DVH to plot."""
    try:
        objectives: Any = dosimetry.parse_objectives(text)
    except dosimetry.ObjectiveError:
        objectives = text  # unreadable: kept as written
    row: dict[str, Any] = {
        "objectives": objectives,
        "valid": bool(result.get("valid")),
        "metrics": result.get("metrics"),
    }
    if result.get("valid"):
        row["dvh"] = result.get("dvh")
        row["converged"] = result.get("converged", True)
    else:
        row["problems"] = result.get("problems") or [result.get("error")]
    return row


def plan_designer(setup: dosimetry.PlanSetup) -> Designer:
    """The radiotherapy loop's ``Designer`` for ``setup``'s plan of the TG-119 phantom."""
    key = setup.key()
    return Designer(
        kind="radiotherapy",
        role=prompts.PLAN_ROLE,
        constraint=prompts.plan_constraint(dosimetry.structures(setup), sorted(dosimetry.KINDS)),
        purpose=prompts.PLAN_EVALUATION_PURPOSE,
        loss_instruction=prompts.plan_loss_instruction(setup.prescription_gy, goals(setup)),
        evaluate=dosimetry.evaluate,
        args=(setup,),
        cache_key=lambda text: f"plan:{key}:{_canonical(text)}",
        render=render,
        record=record,
        input_name="objectives",
    )


def _canonical(text: str) -> str:
    """Equal sets written differently share a cache entry."""
    try:
        return json.dumps(dosimetry.parse_objectives(text), sort_keys=True)
    except dosimetry.ObjectiveError:
        return text.strip()


async def optimize_plans(
    starts: Sequence[str],
    engine: ChatEngine,
    *,
    pool: Any,
    setup: dosimetry.PlanSetup,
    config: DesignConfig | None = None,
    checkpoint: Checkpoint | None = None,
    on_event: EventSink | None = None,
) -> DesignResult:
    """Optimise each starting objective set (JSON text); ``pool`` runs
    ``dosimetry.evaluate`` (``design.make_pool(dosimetry.init_worker, (setup,), ...)``)."""
    return await optimize_designs(
        plan_designer(setup),
        list(starts),
        engine,
        pool=pool,
        config=config,
        checkpoint=checkpoint,
        on_event=on_event,
    )
