"""Prompts of the science loops: molecules (the paper's §3.4) and radiotherapy plans (§3.5)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "MOLECULE_CONSTRAINT",
    "MOLECULE_EVALUATION_PURPOSE",
    "MOLECULE_ROLE",
    "PLAN_EVALUATION_PURPOSE",
    "PLAN_ROLE",
    "molecule_loss_instruction",
    "plan_constraint",
    "plan_loss_instruction",
]

MOLECULE_ROLE = (
    "SMILES string of a candidate drug molecule, to be improved for binding to the target "
    "protein and for drug-likeness"
)
MOLECULE_CONSTRAINT = (
    "The new value must be exactly one valid SMILES string and nothing else: no name, no "
    "explanation, no spaces or line breaks."
)
MOLECULE_EVALUATION_PURPOSE = (
    "docks the molecule into the target's binding pocket with AutoDock Vina and computes its "
    "drug-likeness (QED) and its Lipinski rule-of-five violations"
)


def molecule_loss_instruction(target: str) -> str:
    """The molecule loop's loss: a critique of the measured numbers against both objectives."""
    return (
        f"You review candidate drug molecules designed to bind {target}. You are given a "
        "molecule's SMILES and what was measured for it: its Vina docking score in kcal/mol "
        "(more negative is better; around -6 is weak, below -10 is very strong), its QED "
        "drug-likeness from 0 to 1 (above 0.6 is good) and its Lipinski rule-of-five "
        "violations (0 is best). The goal is stronger binding while the molecule stays "
        "drug-like and synthesizable. Critically evaluate the molecule on each objective: "
        "what holds it back and which structural changes (groups to add, remove or replace, "
        "rings, polarity, size) would most likely improve it. If it could not be evaluated, "
        "explain why and what a valid molecule needs. Be concise; do not write out a full new "
        "SMILES."
    )


PLAN_ROLE = (
    "objective set of a radiotherapy treatment plan (a JSON array of objectives: weights and "
    "dose limits per structure), to be tuned until the plan meets the clinical goals"
)
PLAN_EVALUATION_PURPOSE = (
    "optimises the beam intensities (fluence) for the objective set and reports the resulting "
    "plan's dose metrics"
)


def plan_constraint(structures: Sequence[str], kinds: Sequence[str]) -> str:
    """The optimizer's format constraint for an objective set."""
    return (
        "The new value must be a JSON array of objectives and nothing else. Each objective is "
        'an object {"structure": S, "kind": K, "dose_gy": D, "weight": W} (kinds "max_dvh" '
        'and "min_dvh" also take "volume_pct"), where S is one of '
        + ", ".join(structures)
        + " and K one of "
        + ", ".join(kinds)
        + "; weights are positive, doses in Gy."
    )


def plan_loss_instruction(prescription_gy: float, goals: str) -> str:
    """The radiotherapy loop's loss: a critique of the plan's dose metrics against the goals."""
    return (
        "You review radiotherapy treatment plans for the AAPM TG-119 C-shape case: a C-shaped "
        "target (OuterTarget) wrapped around an organ at risk (Core). The prescription is "
        f"{prescription_gy:g} Gy to the target. Clinical goals: {goals} You are given the "
        "objective set the plan was optimised with (weights and dose limits per structure) "
        "and the resulting dose metrics. Critically evaluate how well each goal is met and "
        "which objectives (their weights, dose limits or missing objectives) cause each "
        "shortfall or trade-off, and in which direction they should change. If the objective "
        "set was rejected, explain what is wrong with it. Be concise; do not write out a full "
        "new objective set."
    )
