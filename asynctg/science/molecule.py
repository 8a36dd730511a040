"""Molecule optimization (the TextGrad paper's §3.4): SMILES strings rewritten by the optimizer
for stronger docking to a protein pocket while staying drug-like.

Each iteration docks the molecule with AutoDock Vina (RDKit 3D conformer, meeko preparation;
``asynctg.science.docking``) in a worker, computes QED and the Lipinski rule-of-five violations,
and an LLM critiques those numbers against the two objectives (binding and drug-likeness);
the feedback flows back to the SMILES and the optimizer proposes a new one. A SMILES RDKit
cannot read, embed or prepare is not an error: its evaluation says why, and that becomes the
feedback. Many starting molecules run at once (``asynctg.science.design``).

The receptor shipped with asynctg is Abl kinase (PDB 1IEP, AutoDock Vina's basic-docking
example, Apache-2.0) with its 20 Å box; any other is ``DockingSetup.from_files(receptor, box)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asynctg import prompts
from asynctg.engine.client import ChatEngine
from asynctg.runs.checkpoint import Checkpoint
from asynctg.runs.loop import EventSink
from asynctg.science import docking
from asynctg.science.design import DesignConfig, Designer, DesignResult, optimize_designs

__all__ = ["DEFAULT_STARTS", "molecule_designer", "optimize_molecules"]

#: Small fragments to grow from, as the paper starts from small molecules: phenol, acetanilide,
#: naphthalene, isonicotinic acid.
DEFAULT_STARTS: tuple[str, ...] = (
    "Oc1ccccc1",
    "CC(=O)Nc1ccccc1",
    "c1ccc2ccccc2c1",
    "OC(=O)c1ccncc1",
)


def render(smiles: str, result: dict[str, Any]) -> str:
    """The evaluation as the loss reads it."""
    if not result.get("valid") or result.get("qed") is None:
        return f"SMILES: {smiles}\nThis molecule could not be evaluated: {result.get('error')}"
    lines = [f"SMILES: {smiles}"]
    vina = result.get("vina")
    if vina is None:
        lines.append(f"Vina docking score: not available ({result.get('error')})")
    else:
        lines.append(f"Vina docking score: {vina:.2f} kcal/mol (more negative binds more strongly)")
    lines.append(f"QED drug-likeness: {result['qed']:.3f} (0 to 1, higher is more drug-like)")
    lines.append(
        f"Lipinski rule-of-five violations: {result['lipinski_violations']} (molecular weight "
        f"{result['mw']:.1f}, logP {result['logp']:.2f}, H-bond donors {result['hbd']}, "
        f"H-bond acceptors {result['hba']})"
    )
    return "\n".join(lines)


def record(smiles: str, result: dict[str, Any]) -> dict[str, Any]:
    """One trajectory row: the pinned JSON fields, and why it could not be scored if so."""
    return {
        "smiles": smiles,
        "valid": bool(result.get("valid")),
        "vina": result.get("vina"),
        "qed": result.get("qed"),
        "lipinski_violations": result.get("lipinski_violations"),
        "error": result.get("error"),
    }


def _target(setup: docking.DockingSetup) -> str:
    from pathlib import Path

    default = docking.DockingSetup.default()
    if Path(setup.receptor).resolve() == Path(default.receptor).resolve():
        return "Abl kinase (PDB 1IEP), in the pocket imatinib binds"
    return f"the protein in {Path(setup.receptor).name}, in the docking box given"


def molecule_designer(setup: docking.DockingSetup, target: str | None = None) -> Designer:
    """The molecule loop's ``Designer`` for docking into ``setup``'s receptor."""
    key = setup.key()
    return Designer(
        kind="molecule",
        role=prompts.MOLECULE_ROLE,
        constraint=prompts.MOLECULE_CONSTRAINT,
        purpose=prompts.MOLECULE_EVALUATION_PURPOSE,
        loss_instruction=prompts.molecule_loss_instruction(target or _target(setup)),
        evaluate=docking.evaluate,
        args=(setup,),
        cache_key=lambda smiles: f"dock:{key}:{smiles.strip()}",
        render=render,
        record=record,
        input_name="smiles",
    )


async def optimize_molecules(
    starts: Sequence[str],
    engine: ChatEngine,
    *,
    pool: Any,
    setup: docking.DockingSetup,
    config: DesignConfig | None = None,
    checkpoint: Checkpoint | None = None,
    on_event: EventSink | None = None,
) -> DesignResult:
    """Optimise each starting SMILES; ``pool`` runs ``docking.evaluate`` (make it with
    ``design.make_pool(docking.init_worker, (setup,), ...)``)."""
    return await optimize_designs(
        molecule_designer(setup),
        list(starts),
        engine,
        pool=pool,
        config=config,
        checkpoint=checkpoint,
        on_event=on_event,
    )
