"""The science loops end to end on the simulator with the real evaluators: `asynctg molecule`
(RDKit + meeko + AutoDock Vina, exhaustiveness 1) and `asynctg radiotherapy` (pyRadPlan on the
TG-119 phantom, coarse grid); bad designs become feedback; a stopped run resumes without
re-running an evaluation or re-sending a call; the Dask backend matches the local pool."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asynctg.cli import main


def _need(module: str) -> None:
    if not os.environ.get("CI"):
        pytest.importorskip(module, reason=f"{module} (a science extra) is not installed")


@pytest.fixture(autouse=True)
def _no_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ASYNCTG_MODEL"):
        monkeypatch.delenv(name, raising=False)
    yield


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, dict[str, Any]]:
    code = main([*args, "--sim", "--sim-latency", "1ms", "--json", "--quiet"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


MOLECULE = ["molecule", "--exhaustiveness", "1", "--workers", "2"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_molecule_loop_docks_for_real_and_bad_smiles_become_feedback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _need("vina")
    report = tmp_path / "report"
    code, data = _run(
        capsys,
        [*MOLECULE, "--smiles", "C1CC(", "CCO", "--iterations", "2", "--report", str(report)],
    )
    assert code == 0 and data["status"] == "completed" and data["failed"] == 0
    bad, ethanol = data["candidates"]
    assert [len(c["trajectory"]) for c in data["candidates"]] == [3, 3]
    first = bad["trajectory"][0]
    assert first["smiles"] == "C1CC(" and first["vina"] is None and "parse" in first["error"]
    assert ethanol["trajectory"][0]["smiles"] == "CCO"
    for row in [*bad["trajectory"][1:], *ethanol["trajectory"]]:
        # the simulator proposes valid molecules: each is docked and scored for real
        assert isinstance(row["vina"], float) and -15 < row["vina"] < 0
        assert 0 < row["qed"] < 1 and row["lipinski_violations"] == 0
    designs = {r["smiles"] for c in data["candidates"] for r in c["trajectory"]}
    assert data["evaluations"]["evaluations"] == len(designs)  # each docked once
    page = (report / "report.html").read_text()
    assert "Vina score per iteration" in page and page.count("<svg") >= 6  # charts + molecules


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_radiotherapy_loop_plans_for_real_and_rejected_sets_become_feedback(
    tmp_path: Path,
) -> None:
    _need("pyRadPlan")
    import anyio

    import asynctg as tg
    from asynctg.apps.report import write_report
    from asynctg.science import dosimetry
    from asynctg.science.design import DesignConfig, make_pool
    from asynctg.science.radiotherapy import optimize_plans, starting_sets
    from asynctg.sim import SimConfig, SimServer

    setup = dosimetry.PlanSetup(cache_dir=str(tmp_path / "dose"))
    rejected = json.dumps(
        [{"structure": "Liver", "kind": "squared_overdose", "dose_gy": 20, "weight": 100}]
    )
    starts = [*starting_sets(1, setup), rejected]

    async def go() -> Any:
        async with SimServer(SimConfig(latency="1ms")) as sim:
            engine = tg.get_engine("sim-1", base_url=sim.base_url, api_key="k")
            async with engine, make_pool(dosimetry.init_worker, (setup,), workers=2) as pool:
                return await optimize_plans(
                    starts, engine, pool=pool, setup=setup, config=DesignConfig(iterations=1)
                )

    result = anyio.run(go)
    data = result.to_json()
    assert data["status"] == "completed" and data["failed"] == 0
    good, bad = data["candidates"]
    for row in good["trajectory"]:
        assert row["valid"] and row["objectives"][0]["structure"] == "OuterTarget"
        m = row["metrics"]
        assert 30 < m["ptv_d95_gy"] < 55 and m["core_mean_gy"] < m["ptv_mean_gy"]
        assert m["core_max_gy"] >= m["core_mean_gy"]
    assert good["trajectory"][0]["metrics"]["ptv_d95_gy"] == pytest.approx(41.28, abs=0.05)
    assert good["trajectory"][0]["objectives"] != good["trajectory"][1]["objectives"]
    for row in bad["trajectory"]:  # rejected every time, as feedback, with the reason
        assert not row["valid"] and row["metrics"] is None
        assert any("Liver" in p for p in row["problems"])
    _, page = write_report(tmp_path / "report", "radiotherapy", data, {"task": "radiotherapy"})
    html = page.read_text()
    assert "dose (Gy)" in html and "Core, iteration 1" in html  # the DVH chart


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_stopped_molecule_run_resumes_without_redoing_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--max-calls stops the run partway; --resume finishes it with every finished call
    replayed from the journal and every finished docking read from the evaluation cache, and
    ends where an uninterrupted run ends."""
    _need("vina")
    common = [*MOLECULE, "--smiles", "CCO", "Oc1ccccc1", "--iterations", "2"]
    code, whole = _run(capsys, [*common, "--checkpoint", str(tmp_path / "whole")])
    assert code == 0
    folder = str(tmp_path / "stopped")
    code, stopped = _run(capsys, [*common, "--checkpoint", folder, "--max-calls", "5"])
    assert code == 0 and stopped["status"] == "stopped"
    done = (tmp_path / "stopped" / "evaluations.jsonl").read_text().splitlines()
    code, resumed = _run(capsys, [*common, "--checkpoint", folder, "--resume"])
    assert code == 0 and resumed["status"] == "completed"
    assert [c["trajectory"] for c in resumed["candidates"]] == [
        c["trajectory"] for c in whole["candidates"]
    ]
    # the resumed process docked only what the stopped one had not
    total = len({r["smiles"] for c in whole["candidates"] for r in c["trajectory"]})
    assert resumed["evaluations"]["evaluations"] == total - len(done)
    assert resumed["usage"]["provider_calls"] == whole["usage"]["provider_calls"]


def test_science_commands_check_their_input_before_running(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asynctg.science import docking, dosimetry

    monkeypatch.setattr(docking, "available", lambda: "pip install 'asynctg[molecule]'")
    assert main(["molecule", "--sim"]) == 2
    assert "asynctg[molecule]" in capsys.readouterr().err
    monkeypatch.setattr(dosimetry, "available", lambda: "needs pyRadPlan")
    assert main(["radiotherapy", "--sim"]) == 2
    assert "pyRadPlan" in capsys.readouterr().err
    monkeypatch.undo()
    for args, message in (
        (["molecule", "--sim", "--receptor", "r.pdbqt"], "--box"),
        (["molecule", "--sim", "--estimate"], "--estimate"),
        (["molecule", "--sim", "--workers", "999"], "cores"),
        (["radiotherapy", "--sim", "--starts", "500"], "144"),
    ):
        if args[0] == "molecule" and docking.available():
            continue
        if args[0] == "radiotherapy" and dosimetry.available():
            continue
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
    bad_box = tmp_path / "box.txt"
    bad_box.write_text("center_x = 1\n")
    if not docking.available():
        assert main(["molecule", "--sim", "--receptor", str(bad_box), "--box", str(bad_box)]) == 2
        assert "box" in capsys.readouterr().err.lower()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_radiotherapy_command_on_a_dask_cluster(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, dask_address: str
) -> None:
    """`asynctg radiotherapy --cluster ADDRESS`: the plans are optimised on the cluster's
    workers (initialised by the pool's plugin), with the local pool's numbers."""
    _need("pyRadPlan")
    args = ["radiotherapy", "--starts", "1", "--iterations", "1"]
    args += ["--dose-cache", str(tmp_path / "dose")]
    code, remote = _run(capsys, [*args, "--cluster", dask_address])
    assert code == 0 and remote["evaluations"]["backend"] == "dask"
    assert remote["evaluations"]["workers"] == 2
    code, local = _run(capsys, [*args, "--workers", "1"])
    assert code == 0 and local["evaluations"]["backend"] == "processes"
    assert [c["trajectory"] for c in remote["candidates"]] == [
        c["trajectory"] for c in local["candidates"]
    ]


class _InlinePool:
    """Runs each evaluation in this process: enough for sets rejected before any planning."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, fn: Any, *args: Any, cache_key: str | None = None) -> Any:
        self.runs += 1
        return fn(*args)

    def statistics(self) -> dict[str, Any]:
        return {"evaluations": self.runs, "cpu_seconds": 0.0, "cache_hits": 0, "backend": "inline"}


async def test_hostile_objective_sets_are_rejected_designs_not_an_aborted_run() -> None:
    """A reply of 3,000 "[" and one with a 5,000-digit weight each become a rejected design with
    its reason in the trajectory; the other designs go on and the run completes."""
    import asynctg as tg
    from asynctg.science import dosimetry
    from asynctg.science.design import DesignConfig
    from asynctg.science.radiotherapy import optimize_plans

    setup = dosimetry.PlanSetup()
    digits = json.dumps(dosimetry.default_objectives()).replace("300", "9" * 5000, 1)
    rejected = json.dumps([{"structure": "Liver", "kind": "mean_dose", "dose_gy": 1, "weight": 1}])
    pool = _InlinePool()
    async with tg.get_engine("sim-1", base_url="http://127.0.0.1:9/v1", api_key="k") as engine:
        result = await optimize_plans(
            ["[" * 3000, digits, rejected],
            engine,
            pool=pool,
            setup=setup,
            config=DesignConfig(iterations=0),  # evaluate the starts only: no LLM call
        )
    data = result.to_json()
    assert data["status"] == "completed" and data["failed"] == 0 and pool.runs == 3
    reasons = [c["trajectory"][0]["problems"][0] for c in data["candidates"]]
    assert "nest 3000 deep" in reasons[0] and "5000 digits" in reasons[1] and "Liver" in reasons[2]
    assert all(not c["trajectory"][0]["valid"] for c in data["candidates"])


def test_science_summaries_print_model_text_without_control_sequences() -> None:
    """`asynctg molecule`'s and `radiotherapy`'s summaries pass every model-written string (a
    SMILES, an error quoting it, a failed design's error) through ``printable``."""
    from asynctg.cli.science import print_result

    esc = "\x1b]0;pwned\x07\x1b[2J\x1b[31m"
    molecule = {
        "kind": "molecule",
        "candidates": [
            {
                "index": 0,
                "trajectory": [
                    {"smiles": f"CCO{esc}", "vina": None, "qed": None, "error": f"bad {esc}x"},
                    {"smiles": f"c1ccccc1O{esc}\r\n", "vina": -5.1, "qed": 0.5, "error": None},
                ],
            },
            {"index": 1, "trajectory": [], "error": f"LLM: reply {esc} \x9b6n"},
        ],
        "evaluations": {"evaluations": 2, "cpu_seconds": 1.0, "cache_hits": 0, "backend": "p"},
    }
    lines: list[str] = []
    print_result(molecule, lines)
    text = "\n".join(lines)
    assert not any(ch in text for ch in "\x1b\x07\r\x9b"), text
    assert "CCO (not scored: bad x)" in text and "c1ccccc1O (Vina -5.10" in text
    assert "failed: LLM: reply 6n" in text


def test_reports_hold_no_control_characters_from_model_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report.html (science and bench reports alike) strips the control characters that
    ``html.escape`` leaves in a model's SMILES, objective set or error."""
    import re

    from asynctg.apps.report import write_report
    from asynctg.loadtest.report import write_report as write_bench_report

    esc = "\x1b]52;c;ZWNobyBoaQ==\x07\x1b[2J\x00\x08"
    row = {"iteration": 0, "smiles": f"CC{esc}O", "vina": None, "qed": None, "error": esc}
    molecule = {"candidates": [{"index": 0, "trajectory": [row]}], "usage": {}}
    plan_row = {"iteration": 0, "objectives": f"[{esc}", "valid": False, "metrics": None}
    plan = {"candidates": [{"index": 0, "trajectory": [{**plan_row, "problems": [esc]}]}]}
    controls = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
    for command, data in (("molecule", molecule), ("radiotherapy", plan)):
        _, page = write_report(tmp_path / command, command, data, {"task": f"t{esc}"})
        html = page.read_text()
        assert not controls.search(html) and "design 1" in html.lower(), command
        assert command != "molecule" or "<code>CCO</code>" in html
    from asynctg.loadtest import report as bench_report

    monkeypatch.setattr(bench_report, "_png", lambda *args: None)  # the page is what counts
    bench = {"model": f"m{esc}", "endpoint": "e", "workload": f"w{esc}", "levels": []}
    _, page = write_bench_report(tmp_path / "bench", bench)
    assert not controls.search(page.read_text())
