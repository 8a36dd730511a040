"""The treatment-planning evaluator: objective JSON in, plan metrics out (science.dosimetry).

The dose matrix is computed once for the module (into a temporary cache folder); every other
evaluation, here and in the spawned process, loads it from there.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import multiprocessing
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from asynctg.science import dosimetry as d

# Without CI set, a machine without pyRadPlan skips the plan tests; CI must have it and fails.
_SKIP = importlib.util.find_spec("pyRadPlan") is None and not os.environ.get("CI")
needs_pyradplan = pytest.mark.skipif(_SKIP, reason="pyRadPlan is not installed")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> d.PlanSetup:
    cache = tmp_path_factory.mktemp("dosimetry-cache")
    return d.PlanSetup(cache_dir=str(cache))


@pytest.fixture(scope="module")
def baseline(setup: d.PlanSetup) -> dict[str, Any]:
    if _SKIP:
        pytest.skip("pyRadPlan is not installed")
    d.init_worker(setup)  # computes and stores the dose matrix: once for the whole module
    return d.evaluate(d.default_objectives(setup), setup)


# -- parsing -------------------------------------------------------------------------------------


def test_parse_finds_the_array_in_prose_and_code_fences() -> None:
    objs = d.default_objectives()
    fenced = f"Here is my plan:\n```json\n{json.dumps(objs, indent=2)}\n```\nIt spares the core."
    assert d.parse_objectives(fenced) == objs
    prose = f"I tried [a few ideas] and settled on {json.dumps(objs)} - better coverage."
    assert d.parse_objectives(prose) == objs
    trailing = json.dumps(objs)[:-2] + "},]"  # a trailing comma, as models sometimes write
    assert d.parse_objectives(trailing) == objs
    assert d.parse_objectives({"objectives": objs}) == objs
    assert d.parse_objectives(objs) == objs and d.parse_objectives(objs) is not objs


@pytest.mark.parametrize(
    "bad", ["no JSON at all", '{"structure": "Core"}', "[1, 2, 3]", "[{broken", 42, [1, 2]]
)
def test_parse_rejects_what_is_not_an_objective_set(bad: Any) -> None:
    with pytest.raises(d.ObjectiveError, match="JSON"):
        d.parse_objectives(bad)
    assert issubclass(d.ObjectiveError, ValueError)


# -- validation ----------------------------------------------------------------------------------


def _problems_with(**change: Any) -> list[str]:
    objs = d.default_objectives()
    objs[1].update(change)  # the core's objective
    return d.validate_objectives(objs, d.PlanSetup())


def test_validation_accepts_every_starting_point() -> None:
    points = d.starting_points(20)
    assert len({json.dumps(p) for p in points}) == 20  # distinct
    assert points == d.starting_points(20)  # deterministic
    assert points[0] == d.default_objectives()
    assert all(d.validate_objectives(p) == [] for p in points)
    assert len({json.dumps(p) for p in d.starting_points(144)}) == 144
    with pytest.raises(ValueError):
        d.starting_points(145)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"structure": "Liver"}, "unknown structure 'Liver'"),
        ({"kind": "gaussian"}, "unknown kind 'gaussian'"),
        ({"weight": 0}, "weight must be a positive number"),
        ({"weight": -5}, "weight must be a positive number"),
        ({"weight": "100"}, "weight must be a positive number"),
        ({"weight": True}, "weight must be a positive number"),
        ({"dose_gy": 101}, "dose_gy must be a number in 0..100 Gy"),
        ({"dose_gy": -1}, "dose_gy must be a number in 0..100 Gy"),
        ({"dose_gy": float("nan")}, "dose_gy must be a number"),
        ({"kind": "max_dvh"}, "needs volume_pct"),
        ({"kind": "max_dvh", "volume_pct": 100}, "needs volume_pct"),
        ({"volume_pct": 10}, "volume_pct only applies"),
        ({"priority": 3}, "unknown fields ['priority']"),
    ],
)
def test_validation_names_each_problem(change: dict[str, Any], expected: str) -> None:
    problems = _problems_with(**change)
    assert len(problems) == 1 and expected in problems[0], problems


def test_validation_of_the_set_as_a_whole() -> None:
    assert "empty" in d.validate_objectives([])[0]
    only_oars = [o for o in d.default_objectives() if o["structure"] != "OuterTarget"]
    assert "no objective asks for dose in the target" in d.validate_objectives(only_oars)[0]
    cold_target = [{**d.default_objectives()[0], "kind": "squared_overdose"}]
    assert "no objective asks for dose" in d.validate_objectives(cold_target)[0]
    too_many = d.default_objectives() * 7
    assert any("at most 20" in p for p in d.validate_objectives(too_many))
    assert "not a JSON object" in d.validate_objectives([*d.default_objectives(), 3])[0]
    ok_dvh = {"structure": "Core", "kind": "max_dvh", "dose_gy": 25, "volume_pct": 10}
    assert d.validate_objectives([*d.default_objectives(), {**ok_dvh, "weight": 50}]) == []


def test_setup_keys_are_stable_and_tell_setups_apart() -> None:
    a, b = d.PlanSetup(), d.PlanSetup(gantry_angles=[0, 72, 144, 216, 288], cache_dir="/x")
    assert a == d.PlanSetup(cache_dir=None) and a.key() == b.key()  # the cache folder is no key
    assert a.geometry_key() == b.geometry_key()
    more = d.PlanSetup(max_iterations=50)
    assert more.key() != a.key() and more.geometry_key() == a.geometry_key()
    assert d.PlanSetup(dose_grid_mm=5).geometry_key() != a.geometry_key()
    with pytest.raises(ValueError):
        d.PlanSetup(bixel_width_mm=0)


def test_a_bad_set_is_reported_not_raised() -> None:
    setup = d.PlanSetup()  # invalid sets are rejected before any dose is computed
    result = d.evaluate([{"structure": "Liver", "kind": "x", "dose_gy": 1, "weight": 1}], setup)
    assert result["valid"] is False and "Liver" in result["error"] and result["problems"]
    result = d.evaluate("I cannot answer that.", setup)
    assert result["valid"] is False and "JSON" in result["error"]


# -- evaluation ----------------------------------------------------------------------------------


@needs_pyradplan
def test_names_and_prescription_are_the_phantoms(setup: d.PlanSetup) -> None:
    with d._quiet():  # what pyRadPlan itself says about TG-119
        _, cst = d._import_pyradplan().load_tg119()
    assert d.structures(setup) == [voi.name for voi in cst.vois]
    (target,) = [voi for voi in cst.vois if voi.voi_type == "TARGET"]
    assert target.name == "OuterTarget"
    assert target.objectives[0].d_ref == setup.prescription_gy == 50.0


@needs_pyradplan
def test_default_plan_is_plausible(setup: d.PlanSetup, baseline: dict[str, Any]) -> None:
    assert baseline["valid"] is True
    m, rx = baseline["metrics"], setup.prescription_gy
    assert 0.7 * rx < m["ptv_d95_gy"] < m["ptv_mean_gy"] < 1.1 * rx
    assert m["core_mean_gy"] < m["ptv_mean_gy"] and m["core_max_gy"] < m["ptv_max_gy"]
    assert m["ptv_d98_gy"] <= m["ptv_d95_gy"] <= m["ptv_d2_gy"] <= m["ptv_max_gy"]
    assert 0 < m["ptv_homogeneity_index"] < 1 and 0 < m["ptv_v95_pct"] < 100
    assert m["body_mean_gy"] < m["core_mean_gy"]
    assert set(baseline["dvh"]) == set(d.structures())
    for curve in baseline["dvh"].values():
        assert len(curve["dose_gy"]) == len(curve["volume_pct"]) == 60
        assert curve["volume_pct"][0] == 100.0 and curve["volume_pct"][-1] <= 100.0 / 1000
        assert curve["volume_pct"] == sorted(curve["volume_pct"], reverse=True)
    assert 0 < baseline["seconds"] < 30 and baseline["iterations"] > 0
    assert json.loads(json.dumps(baseline)) == baseline  # JSON-able as it is


@needs_pyradplan
def test_protecting_the_core_moves_the_metrics_the_expected_way(
    setup: d.PlanSetup, baseline: dict[str, Any]
) -> None:
    objs = d.default_objectives(setup)
    objs[1]["weight"] *= 10
    harder = d.evaluate(objs, setup)["metrics"]
    assert harder["core_mean_gy"] < baseline["metrics"]["core_mean_gy"] - 0.5
    assert harder["ptv_d95_gy"] < baseline["metrics"]["ptv_d95_gy"]  # the price: coverage


@needs_pyradplan
def test_evaluation_is_bit_identical_here_and_in_a_spawned_process(
    setup: d.PlanSetup, baseline: dict[str, Any]
) -> None:
    again = d.evaluate(d.default_objectives(setup), setup)
    assert again["metrics"] == baseline["metrics"] and again["dvh"] == baseline["dvh"]
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        there = pool.submit(d.evaluate, d.default_objectives(setup), setup).result(timeout=50)
    assert there["metrics"] == baseline["metrics"] and there["dvh"] == baseline["dvh"]


@needs_pyradplan
def test_a_second_init_loads_the_cached_matrix(
    setup: d.PlanSetup, baseline: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert setup.cache_dir is not None
    (cached,) = Path(setup.cache_dir).glob("tg119-dij-*.npz")
    assert setup.geometry_key() in cached.name
    stamp = cached.stat().st_mtime_ns

    def must_not_run(*args: object) -> None:
        raise AssertionError("the dose matrix was computed again")

    monkeypatch.setattr(d, "_STATES", {})  # as in a fresh process
    monkeypatch.setattr(d, "_compute_influence", must_not_run)
    d.init_worker(setup)
    d.init_worker(setup)  # and a repeated call is a no-op
    assert cached.stat().st_mtime_ns == stamp
    assert d.evaluate(d.default_objectives(setup), setup)["metrics"] == baseline["metrics"]


class _Planted:
    """Unpickling this creates ``marker``: proof that a cache file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@needs_pyradplan
def test_a_planted_pickle_in_the_dose_cache_is_never_unpickled(
    setup: d.PlanSetup, baseline: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pickle under any name the cache uses (this format's and the old .pkl) is not loaded:
    the matrix is computed again and stored as plain arrays, which the next process reads."""
    state = d._STATES[setup.geometry_key()]
    other = d.PlanSetup(cache_dir=str(tmp_path / "cache"))
    folder, marker = tmp_path / "cache", tmp_path / "unpickled"
    folder.mkdir()
    bomb = pickle.dumps(_Planted(marker))
    for suffix in (".npz", ".pkl"):
        (folder / f"tg119-dij-{other.geometry_key()}{suffix}").write_bytes(bomb)
    computed: list[str] = []

    def compute(*args: object) -> tuple[Any, Any]:  # the module's matrix, as if computed anew
        computed.append("dij")
        return state.stf, state.dij

    monkeypatch.setattr(d, "_compute_influence", compute)
    stf, dij = d._load_or_compute(other, state.ct, state.cst)
    assert not marker.exists() and computed == ["dij"] and dij is state.dij
    import numpy as np

    stored = folder / f"tg119-dij-{other.geometry_key()}.npz"
    with np.load(stored, allow_pickle=False) as arrays:  # plain numbers only: no pickle inside
        assert all(arrays[name].dtype != object for name in arrays.files)
    stf, loaded = d._load_or_compute(other, state.ct, state.cst)  # read back, not computed
    assert computed == ["dij"] and not marker.exists()
    assert (loaded.physical_dose.flat[0] != state.dij.physical_dose.flat[0]).nnz == 0
    assert stf.total_number_of_bixels == loaded.total_num_of_bixels


@needs_pyradplan
def test_a_damaged_or_foreign_dose_cache_is_computed_again(
    setup: d.PlanSetup, baseline: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated file, or one stored for another geometry, is not used: computed again."""
    state = d._STATES[setup.geometry_key()]
    other = d.PlanSetup(cache_dir=str(tmp_path))
    path = tmp_path / f"tg119-dij-{other.geometry_key()}.npz"
    computed: list[str] = []

    def compute(*args: object) -> tuple[Any, Any]:
        computed.append("dij")
        return state.stf, state.dij

    monkeypatch.setattr(d, "_compute_influence", compute)
    d._load_or_compute(other, state.ct, state.cst)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    d._load_or_compute(other, state.ct, state.cst)
    assert computed == ["dij", "dij"] and path.read_bytes() == good
    with open(path, "wb") as f:  # a well-formed file of another geometry, renamed
        d._write_dij(f, state.dij, d.PlanSetup(dose_grid_mm=5))
    d._load_or_compute(other, state.ct, state.cst)
    assert computed == ["dij"] * 3


@needs_pyradplan
def test_every_kind_reaches_pyradplan(setup: d.PlanSetup, baseline: dict[str, Any]) -> None:
    objs = [
        {"structure": "OuterTarget", "kind": "squared_underdose", "dose_gy": 48, "weight": 500},
        {
            "structure": "OuterTarget",
            "kind": "min_dvh",
            "dose_gy": 50,
            "volume_pct": 95,
            "weight": 50,
        },
        {"structure": "OuterTarget", "kind": "squared_overdose", "dose_gy": 53, "weight": 500},
        {"structure": "Core", "kind": "max_dvh", "dose_gy": 25, "volume_pct": 10, "weight": 100},
        {"structure": "Core", "kind": "mean_dose", "dose_gy": 0, "weight": 10},
        {"structure": "BODY", "kind": "squared_overdose", "dose_gy": 30, "weight": 100},
    ]
    assert d.validate_objectives(objs, setup) == []
    result = d.evaluate(objs, setup)
    assert result["valid"] is True, result.get("error")
    assert result["metrics"]["core_mean_gy"] < result["metrics"]["ptv_mean_gy"]


@needs_pyradplan
def test_a_failing_optimization_is_reported_not_raised(
    setup: d.PlanSetup, baseline: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("solver diverged")

    monkeypatch.setattr(d, "_optimize", broken)
    result = d.evaluate(d.default_objectives(setup), setup)
    assert result["valid"] is False and "solver diverged" in result["error"]


# -- hostile answers and degenerate plans --------------------------------------------------------


def _strict(value: Any) -> Any:
    """JSON round trip that refuses Infinity and NaN, as strict parsers do."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(json.dumps(value), parse_constant=refuse)


def _with_weights(scale: float | None = None, text: str | None = None) -> str:
    """The default set as JSON, every weight scaled, or the core's weight spelled ``text``."""
    objs = d.default_objectives()
    if scale is not None:
        for o in objs:
            o["weight"] *= scale
        return json.dumps(objs)
    return json.dumps(objs).replace('"weight": 300', f'"weight": {text}', 1)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("[" * 3000, "nest 3000 deep"),
        ("Here: " + "[{" * 600 + "}]" * 600, "nest 1200 deep"),
        (_with_weights(text="1" * 5000), "5000 digits"),
        (_with_weights(text="0." + "1" * 5000), "out of range"),
        (_with_weights(text="Infinity"), "Infinity is not a number"),
        (_with_weights(text="-Infinity"), "-Infinity is not a number"),
        (_with_weights(text="NaN"), "NaN is not a number"),
        (_with_weights(text="1e999"), "1e999 is out of range"),
        (_with_weights(text="1e308"), "weight must be a positive number from 0.001 to"),
        (_with_weights(scale=1e-12), "weight must be a positive number from 0.001 to"),
        ("x" * 30_000 + json.dumps(d.default_objectives()), "characters long"),
        ("[1] " * 300 + json.dumps(d.default_objectives()), "too many '['"),
    ],
    ids=[
        "3000-brackets",
        "1200-deep",
        "5000-digit-int",
        "5000-digit-float",
        "Infinity",
        "-Infinity",
        "NaN",
        "1e999",
        "1e308",
        "scaled-1e-12",
        "30000-chars",
        "300-brackets",
    ],
)
def test_a_hostile_answer_is_a_rejected_set_with_a_reason(answer: str, reason: str) -> None:
    """Deep nesting, endless digits, non-finite or absurd weights and oversized answers are
    rejected with a reason the loss reads (no RecursionError or ValueError escapes, no plan is
    optimized), and the trajectory row, the cache key and the loss's text are strict JSON."""
    from asynctg.science import radiotherapy

    setup = d.PlanSetup()  # no cache folder: nothing here may reach pyRadPlan
    result = d.evaluate(answer, setup)
    assert result["valid"] is False and any(reason in p for p in result["problems"]), result
    row = radiotherapy.record(answer, result)
    assert row["valid"] is False and row["metrics"] is None and row["problems"]
    assert _strict(row) == row and _strict(result) == result
    assert radiotherapy.plan_designer(setup).cache_key(answer).startswith("plan:")
    assert reason in radiotherapy.render(answer, result)


def _judged(iterations: int, capped: bool = False, **metrics: float) -> dict[str, Any]:
    base = {"ptv_mean_gy": 48.0, "ptv_d95_gy": 41.0, "core_mean_gy": 20.0}
    result = {"valid": True, "metrics": {**base, **metrics}, "dvh": {}, "iterations": iterations}
    return d.judge_plan(result, d.PlanSetup(max_iterations=500), capped=capped)


def test_degenerate_plans_are_not_valid_and_say_why() -> None:
    """No optimizer step, no dose in the target, or a non-finite number: ``valid`` False,
    ``degenerate`` True, a reason for the loss, and strict JSON (the NaN becomes null)."""
    no_step = _judged(0)
    assert no_step["valid"] is False and no_step["degenerate"] is True
    assert "before its first step" in no_step["error"]
    empty = _judged(40, ptv_mean_gy=0.0, ptv_d95_gy=0.0)
    assert empty["valid"] is False and "almost no dose" in empty["error"]
    broken = _judged(40, core_mean_gy=float("nan"))
    assert broken["valid"] is False and "not finite (core_mean_gy)" in broken["error"]
    assert broken["metrics"]["core_mean_gy"] is None and _strict(broken) == broken
    fine = _judged(120)
    assert fine["valid"] is True and fine["converged"] is True and "warnings" not in fine


def test_a_plan_at_the_iteration_cap_is_flagged_not_converged() -> None:
    """Stopping at ``max_iterations`` (or the solver saying so) keeps the plan but marks it
    ``converged: False`` with a warning the loss reads and the summary shows."""
    from asynctg.cli.science import _plan_metrics
    from asynctg.science import radiotherapy

    for capped_result in (_judged(500), _judged(37, capped=True)):
        assert capped_result["valid"] is True and capped_result["converged"] is False
        assert "cap of 500 iterations" in capped_result["warnings"][0]
    result = {**_judged(500), "metrics": {**_judged(500)["metrics"], "core_max_gy": 30.0}}
    assert "Note: the fluence optimizer stopped at its cap" in radiotherapy.render("[]", result)
    row = radiotherapy.record(json.dumps(d.default_objectives()), result)
    assert row["converged"] is False and _plan_metrics(row).endswith("(not converged)")


@needs_pyradplan
def test_a_real_plan_stopped_by_its_cap_is_flagged(
    setup: d.PlanSetup, baseline: dict[str, Any]
) -> None:
    """pyRadPlan stopped after 5 iterations: the result says ``converged: False``; the
    unhurried default plan converges, and both are strict JSON."""
    assert baseline["converged"] is True and _strict(baseline) == baseline
    short = d.PlanSetup(max_iterations=5, cache_dir=setup.cache_dir)  # same dose matrix
    result = d.evaluate(d.default_objectives(short), short)
    assert result["valid"] is True and result["iterations"] == 5
    assert result["converged"] is False and result["warnings"]
    assert _strict(result) == result
