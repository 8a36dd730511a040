"""The command lines of the science loops: ``asynctg molecule`` and ``asynctg radiotherapy``.

``asynctg.cli.common`` and ``asynctg.cli.execute`` own the shared parts (endpoint, checkpoint,
report, replay, printing usage); this module adds each loop's options, checks its packages
before anything runs, and runs it with its evaluation pool (local processes, or a Dask
cluster with ``--cluster``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asynctg.cli.common import PlannedLoop
from asynctg.errors import ConfigError
from asynctg.output.text import printable

if TYPE_CHECKING:
    from asynctg.runs.loop import Budget

__all__ = [
    "COMMANDS",
    "DesignTask",
    "add_parsers",
    "check_task",
    "plan_loop",
    "plan_task",
    "print_result",
    "run_loop",
]

COMMANDS = ("molecule", "radiotherapy")


@dataclass(frozen=True)
class DesignTask:
    """What a science run optimises: its starting designs and the evaluator's setup."""

    name: str
    starts: tuple[str, ...]
    setup: Any
    initializer: Callable[..., Any]
    source: str

    def sizes(self) -> dict[str, int]:
        return {"starts": len(self.starts)}


def add_parsers(
    sub: Any,
    *,
    endpoint_options: Callable[[argparse.ArgumentParser], None],
    run_options: Callable[[argparse.ArgumentParser], None],
    positive_int: Callable[[str], int],
    count: Callable[[str], int],
    positive_float: Callable[[str], float],
) -> None:
    mol = sub.add_parser(
        "molecule",
        help="molecule optimization: docking score and drug-likeness (RDKit, AutoDock Vina)",
        description=(
            "Optimise molecules (SMILES) for binding to a protein pocket and drug-likeness, as "
            "in the TextGrad paper: each iteration docks every molecule with AutoDock Vina in a "
            "worker process, an LLM critiques the Vina score, QED and Lipinski violations, and "
            "the optimizer rewrites the SMILES. The receptor is Abl kinase (PDB 1IEP) unless "
            "--receptor and --box are given. Needs: pip install 'asynctg[molecule]'."
        ),
    )
    g = mol.add_argument_group("molecule optimization")
    g.add_argument(
        "--smiles",
        action="extend",
        nargs="+",
        metavar="S",
        help="starting molecules (default: four small fragments)",
    )
    g.add_argument("--iterations", type=count, default=3, help="optimizer rounds (3)")
    g.add_argument(
        "--exhaustiveness",
        type=positive_int,
        default=8,
        help="Vina's search effort per docking (8; 1 is ~10x faster; drug-sized ligands' "
        "scores depend on the seed at any setting, see docs/applications.md)",
    )
    g.add_argument("--receptor", metavar="FILE", help="receptor .pdbqt (needs --box)")
    g.add_argument("--box", metavar="FILE", help="Vina box file: center_x = ... size_z = ...")
    _pool_options(g, positive_int, positive_float, default_timeout=900.0)
    endpoint_options(mol)
    run_options(mol)

    rt = sub.add_parser(
        "radiotherapy",
        help="radiotherapy treatment planning: objective weights and dose limits (pyRadPlan)",
        description=(
            "Tune a radiotherapy plan's objective set (weights and dose limits per structure) "
            "for the AAPM TG-119 C-shape phantom, as in the TextGrad paper: each iteration "
            "optimises the beam fluences in a worker process (pyRadPlan), an LLM critiques the "
            "dose metrics against the clinical goals, and the optimizer rewrites the objectives. "
            "Needs: pip install 'asynctg[radiotherapy]'."
        ),
    )
    g = rt.add_argument_group("treatment planning")
    g.add_argument(
        "--starts", type=positive_int, default=4, help="starting objective sets, run at once (4)"
    )
    g.add_argument("--iterations", type=count, default=3, help="optimizer rounds (3)")
    g.add_argument(
        "--dose-cache",
        metavar="DIR",
        help="where the dose influence matrix is kept between runs (default: "
        "$ASYNCTG_CACHE_DIR/dosimetry, else ~/.cache/asynctg/dosimetry)",
    )
    _pool_options(g, positive_int, positive_float, default_timeout=600.0)
    endpoint_options(rt)
    run_options(rt)


def _pool_options(
    g: Any,
    positive_int: Callable[[str], int],
    positive_float: Callable[[str], float],
    *,
    default_timeout: float,
) -> None:
    g.add_argument(
        "--workers",
        type=positive_int,
        help="evaluation processes on this machine (default: one per core, the maximum)",
    )
    g.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the evaluations on a Dask cluster (tcp://HOST:PORT) instead; needs "
        "pip install 'asynctg[dask]' here and on the workers",
    )
    g.add_argument(
        "--eval-timeout",
        type=positive_float,
        default=default_timeout,
        help=f"seconds one evaluation may take ({default_timeout:g})",
    )


def _dose_cache() -> Path:
    """``$ASYNCTG_CACHE_DIR/dosimetry``, else ``$XDG_CACHE_HOME/asynctg/dosimetry``, else
    ``~/.cache/asynctg/dosimetry`` (the compat engines' cache, one folder over)."""
    explicit = os.environ.get("ASYNCTG_CACHE_DIR")
    if explicit:
        return Path(explicit) / "dosimetry"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "asynctg" / "dosimetry"


def check_task(args: argparse.Namespace) -> None:
    """Nothing to check before the run's own checks: a science command has one task."""


def plan_loop(args: argparse.Namespace, budget: Budget) -> PlannedLoop:
    """The design task and the loop's settings (``plan_task`` checks the packages first)."""
    from asynctg.science.design import DesignConfig

    task, fields = plan_task(args)
    return PlannedLoop(
        task=task,
        config=DesignConfig(iterations=args.iterations, budget=budget),
        fingerprint=fields,
    )


def plan_task(args: argparse.Namespace) -> tuple[DesignTask, dict[str, Any]]:
    """The run's task and its fingerprint's extra fields; ConfigError (exit 2) before anything
    runs when the packages are missing or an input is wrong."""
    if args.estimate:
        raise ConfigError(
            f"--estimate is not available for `asynctg {args.command}`: its dry run would have "
            "to dock or plan for real; use --max-calls / --max-cost to bound a run"
        )
    if args.workers is not None and args.cluster:
        raise ConfigError("--workers sets local processes; with --cluster the cluster's count")
    if args.workers is not None:
        from asynctg.workers.local import local_workers

        local_workers(args.workers)  # checked now, before anything runs
    if args.command == "molecule":
        from asynctg.science import docking
        from asynctg.science.molecule import DEFAULT_STARTS

        missing = docking.available()
        if missing:
            raise ConfigError(missing)
        setup: Any
        if (args.receptor is None) != (args.box is None):
            raise ConfigError("--receptor and --box go together (a receptor needs its box)")
        try:
            if args.receptor:
                setup = docking.DockingSetup.from_files(
                    args.receptor, args.box, exhaustiveness=args.exhaustiveness
                )
            else:
                setup = docking.DockingSetup.default(exhaustiveness=args.exhaustiveness)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        starts = tuple(s.strip() for s in (args.smiles or DEFAULT_STARTS))
        if not all(starts):
            raise ConfigError("--smiles: an empty SMILES string")
        receptor = Path(setup.receptor).name
        task = DesignTask("molecule", starts, setup, docking.init_worker, f"receptor {receptor}")
    else:
        from asynctg.science import dosimetry
        from asynctg.science.radiotherapy import starting_sets

        missing = dosimetry.available()
        if missing:
            raise ConfigError(missing)
        cache = Path(args.dose_cache) if args.dose_cache else _dose_cache()
        setup = dosimetry.PlanSetup(cache_dir=str(cache))
        if args.starts > 144:
            raise ConfigError("--starts: at most 144 distinct starting sets")
        starts = tuple(starting_sets(args.starts, setup))
        task = DesignTask("radiotherapy", starts, setup, dosimetry.init_worker, "TG-119 phantom")
    return task, {"starts": list(task.starts), "setup": task.setup.key()}


async def run_loop(
    args: argparse.Namespace,
    task: DesignTask,
    loop_config: Any,
    engine: Any,
    checkpoint: Any,
    progress: Any,
) -> Any:
    """Run the loop with its pool (closed at the end); evaluations cached in the checkpoint."""
    from asynctg.science.design import make_pool

    cache = checkpoint.path / "evaluations.jsonl" if checkpoint is not None else None
    pool = make_pool(
        task.initializer,
        (task.setup,),
        workers=args.workers,
        cluster=args.cluster,
        timeout=args.eval_timeout,
        cache=cache,
    )
    run: Callable[..., Any]
    if task.name == "molecule":
        from asynctg.science.molecule import optimize_molecules

        run = optimize_molecules
    else:
        from asynctg.science.radiotherapy import optimize_plans

        run = optimize_plans
    async with pool:
        return await run(
            task.starts,
            engine,
            pool=pool,
            setup=task.setup,
            config=loop_config,
            checkpoint=checkpoint,
            on_event=progress,
        )


def print_result(data: dict[str, Any], lines: list[str]) -> None:
    """Each design's start and last iteration, appended to ``lines``; what a model wrote (a
    SMILES, an error quoting it) is passed through ``printable`` first."""
    for candidate in data["candidates"]:
        n = candidate["index"] + 1
        if "error" in candidate:
            lines.append(f"  design {n:<3} failed: {_text(candidate['error'], 200)}")
            continue
        first, last = candidate["trajectory"][0], candidate["trajectory"][-1]
        if data["kind"] == "molecule":
            lines.append(f"  design {n:<3} {_molecule(first)}  ->  {_molecule(last)}")
        else:
            lines.append(f"  design {n:<3} {_plan_metrics(first)}  ->  {_plan_metrics(last)}")
    stats = data["evaluations"]
    lines.append(
        f"  evaluations      {stats['evaluations']} run ({stats['cpu_seconds']:.1f} s CPU), "
        f"{stats['cache_hits']} cached, on {stats.get('workers', '?')} {stats['backend']}"
    )


def _text(value: object, limit: int) -> str:
    """Model-written text as one printable line: control sequences gone (``printable``, as
    everywhere the CLI prints), whitespace collapsed, at most ``limit`` characters."""
    flat = " ".join(printable(str(value)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _molecule(row: dict[str, Any]) -> str:
    smiles = _text(row["smiles"], 120)
    if row["vina"] is None:
        return f"{smiles} (not scored: {_text(row['error'], 60)})"
    return f"{smiles} (Vina {row['vina']:.2f}, QED {row['qed']:.2f})"


def _plan_metrics(row: dict[str, Any]) -> str:
    m = row.get("metrics")
    if not row.get("valid") or not m:
        return "degenerate plan" if m else "rejected"
    unfinished = "" if row.get("converged", True) else " (not converged)"
    return (
        f"D95 {m['ptv_d95_gy']:.1f} Gy, Core mean {m['core_mean_gy']:.1f} / max "
        f"{m['core_max_gy']:.1f} Gy{unfinished}"
    )
