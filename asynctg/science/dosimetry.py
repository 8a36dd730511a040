"""CPU-side evaluator for the treatment-planning application (TextGrad paper, section 3.5).

An LLM rewrites a radiotherapy plan's *objective set* (per structure: a kind, a dose and a
weight); this module turns one set into the numbers the loss talks about. The patient is
pyRadPlan's AAPM TG-119 C-shape phantom (``Core``, ``OuterTarget``, ``BODY``; 50 Gy, TG-119's
25 x 2 Gy, which the phantom's own target objective also asks for), the plan a deliberately
coarse photon IMRT plan (5 beams, 10 mm bixels, 8 mm dose grid), so that one evaluation
(objectives -> L-BFGS-B fluence optimization -> dose -> metrics) costs about a CPU second.

The dose influence matrix does not depend on the objectives: it is computed once per plan
geometry and, with ``cache_dir``, stored for every other process as plain numeric arrays
(``.npz``, read without pickle: a file planted in the folder cannot run code). All functions
are top-level and take picklable arguments, for spawned process-pool and Dask workers. Those
pools should start workers with ``OMP_NUM_THREADS=1`` (and ``OPENBLAS_NUM_THREADS=1``) in their
environment: thread pools cannot be capped once numpy is imported, one thread per worker is
fastest when many evaluations run side by side, and results stay bit-identical. This module
never touches ``os.environ``. An objective set is JSON that the LLM reads and writes::

    [{"structure": "OuterTarget", "kind": "squared_deviation", "dose_gy": 50, "weight": 1000},
     {"structure": "Core", "kind": "max_dvh", "dose_gy": 25, "volume_pct": 10, "weight": 300}]

pyRadPlan (and numpy) are optional and imported lazily: the parent process can parse, validate
and seed objective sets without them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger(__name__)

#: JSON ``kind`` -> (pyRadPlan objective class, its dose parameter, its volume parameter).
KINDS: dict[str, tuple[str, str, str | None]] = {
    "squared_deviation": ("SquaredDeviation", "d_ref", None),
    "squared_overdose": ("SquaredOverdosing", "d_max", None),
    "squared_underdose": ("SquaredUnderdosing", "d_min", None),
    "mean_dose": ("MeanDose", "d_ref", None),
    "max_dvh": ("MaxDVH", "d", "v_max"),
    "min_dvh": ("MinDVH", "d", "v_min"),
}
_PUSHES_DOSE = ("squared_deviation", "squared_underdose", "min_dvh")  # what a target needs
_FIELDS = {"structure", "kind", "dose_gy", "weight", "volume_pct"}
_MAX_OBJECTIVES = 20
# Bounds on reading what the model wrote: its text, how deep brackets nest (an objective set is
# two deep; json recurses per level, so "[" * 3000 would raise RecursionError), how many "["
# are tried as the start of the set, and how many characters one number may have (int() of
# 5,000 digits raises ValueError, and no dose or weight needs more than a few).
_MAX_TEXT_CHARS = 20_000
_MAX_DEPTH = 16
_MAX_STARTS = 200
_MAX_NUMBER_CHARS = 32
# Weights are relative, but the optimizer's stopping tolerance is absolute: scaled far down
# (1e-9) it stops before its first step and leaves a zero-dose plan; scaled far up (1e308) the
# objective overflows. The starting sets use 30..10000.
_WEIGHT_MIN, _WEIGHT_MAX = 1e-3, 1e6
_WEIGHT_RANGE = f"{_WEIGHT_MIN:g} to {_WEIGHT_MAX:,.0f}"
_EMPTY_TARGET = 0.05  # a target mean below 5% of the prescription: the plan gave no dose
_DVH_POINTS = 60
_CACHE_FORMAT = 2  # bump when the stored arrays change (1: a pickle, never read now)
# Spelled here, not read from the phantom, so the parent never needs pyRadPlan to validate;
# tests/test_dosimetry.py checks them against what pyRadPlan reports.
_STRUCTURES = ("Core", "OuterTarget", "BODY")
_TARGETS = ("OuterTarget",)
_METRIC_PREFIX = {"OuterTarget": "ptv", "Core": "core", "BODY": "body"}
_INSTALL = "pip install 'asynctg[radiotherapy]'"


class ObjectiveError(ValueError):
    """The text holds no readable objective set; the message says how to write one."""


@dataclass(frozen=True)
class PlanSetup:
    """Plan geometry and optimizer settings. One dose matrix per geometry, cached on disk."""

    bixel_width_mm: float = 10.0
    dose_grid_mm: float = 8.0
    gantry_angles: tuple[float, ...] = (0.0, 72.0, 144.0, 216.0, 288.0)
    prescription_gy: float = 50.0
    num_fractions: int = 25
    max_iterations: int = 500  # L-BFGS-B converges after 100-250 on TG-119
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # Normalized so that equal setups compare, hash and key equally whatever was passed.
        object.__setattr__(self, "gantry_angles", tuple(float(a) for a in self.gantry_angles))
        for name in ("bixel_width_mm", "dose_grid_mm", "prescription_gy"):
            object.__setattr__(self, name, float(getattr(self, name)))
            if not getattr(self, name) > 0:
                raise ValueError(f"PlanSetup.{name} must be positive")
        if not self.gantry_angles or self.max_iterations < 1 or self.num_fractions < 1:
            raise ValueError("PlanSetup needs beams, max_iterations >= 1 and num_fractions >= 1")

    def key(self) -> str:
        """Short stable key of all that changes results (not where the cache lives)."""
        fields = dataclasses.asdict(self)
        del fields["cache_dir"]
        return _digest([fields, _pyradplan_version()])[:16]

    def geometry_key(self) -> str:
        """Key of all the dose matrix depends on: names its cache file and in-process state."""
        geometry = [self.bixel_width_mm, self.dose_grid_mm, self.gantry_angles, _CACHE_FORMAT]
        return _digest([geometry, _pyradplan_version()])[:20]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@functools.cache
def _pyradplan_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyradplan")
    except PackageNotFoundError:
        return "missing"


def available() -> str | None:
    """None when the evaluator can run here, else a message saying what to install."""
    try:
        _import_pyradplan()
    except ImportError as exc:
        return f"the treatment-planning app needs pyRadPlan ({exc}); run: {_INSTALL}"
    return None


def _import_pyradplan() -> Any:
    # numpydantic warns (DeprecationWarning) as pyRadPlan defines its models, and pyRadPlan warns
    # about some OpenBLAS builds: nothing to act on here, and the tests make warnings errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyRadPlan  # type: ignore[import-untyped]
        import pyRadPlan.optimization.objectives  # type: ignore[import-untyped]
    return pyRadPlan


def structures(setup: PlanSetup | None = None) -> list[str]:
    """The phantom's structure names, spelled as pyRadPlan reports them."""
    return list(_STRUCTURES)


def default_objectives(setup: PlanSetup | None = None) -> list[dict[str, Any]]:
    """The phantom's own objective set (doses scaled to the prescription): the first plan."""
    return starting_points(1, setup)[0]


def starting_points(k: int, setup: PlanSetup | None = None) -> list[list[dict[str, Any]]]:
    """``k`` (up to 144) distinct, deterministic objective sets; the first is the default.

    They differ in what the trade-off turns on: how hard the core is protected (weight and
    limit together, so neighbours differ in both) and, past 36, the body's weight.
    """
    rx = (setup or PlanSetup()).prescription_gy
    core_weights, core_limits = (300, 1000, 100, 3000, 30, 10000), (0.5, 0.4, 0.6, 0.3, 0.7, 0.2)
    body_weights = (100, 300, 30, 1000)
    if not 0 <= k <= 144:
        raise ValueError(f"starting_points: k must be in 0..144, got {k}")
    sets = []
    for i in range(k):
        limit, weight = rx * core_limits[(i + i // 6) % 6], core_weights[i % 6]
        sets.append([_obj("OuterTarget", "squared_deviation", rx, 1000)])
        sets[-1].append(_obj("Core", "squared_overdose", limit, weight))
        sets[-1].append(_obj("BODY", "squared_overdose", 0.6 * rx, body_weights[i // 36]))
    return sets


def _obj(structure: str, kind: str, dose: float, weight: float) -> dict[str, Any]:
    return {"structure": structure, "kind": kind, "dose_gy": round(dose, 2), "weight": weight}


def parse_objectives(text_or_obj: Any) -> list[dict[str, Any]]:
    """Read an objective set: a list, ``{"objectives": [...]}``, or text holding a JSON array.

    In text, the first JSON array of objects counts, wherever it is (prose and code fences
    around it are fine; trailing commas are forgiven). Raises :class:`ObjectiveError` with a
    message an LLM can act on.
    """
    value = text_or_obj
    if isinstance(value, str):
        if len(value) > _MAX_TEXT_CHARS:
            raise ObjectiveError(
                f"the answer is {len(value)} characters long; an objective set needs a few "
                f"hundred (at most {_MAX_TEXT_CHARS})"
            )
        value = _first_json_array(value)
    if isinstance(value, dict) and isinstance(value.get("objectives"), list):
        value = value["objectives"]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        example = json.dumps(default_objectives()[:1])
        raise ObjectiveError(f"an objective set must be a JSON array of objects like {example}")
    return [dict(item) for item in value]


def _reject_constant(name: str) -> Any:
    raise ObjectiveError(
        f"{name} is not a number an objective set can use; every dose and weight must be a "
        "finite number (e.g. 300)"
    )


def _read_int(digits: str) -> int:
    if len(digits) > _MAX_NUMBER_CHARS:
        raise ObjectiveError(
            f"a number with {len(digits)} digits; write doses and weights as plain numbers "
            f"(weights from {_WEIGHT_RANGE})"
        )
    return int(digits)


def _read_float(text: str) -> float:
    value = float(text) if len(text) <= _MAX_NUMBER_CHARS else math.inf
    if not math.isfinite(value):  # 1e999 reads as inf
        raise ObjectiveError(
            f"the number {text[:40]}{'...' if len(text) > 40 else ''} is out of range; write "
            f"doses and weights as plain numbers (weights from {_WEIGHT_RANGE})"
        )
    return value


_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_read_int, parse_float=_read_float
)


def _nesting(text: str) -> int:
    """How deep brackets nest in ``text`` (counted as if no string held any: an upper bound)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def _first_json_array(text: str) -> Any:
    if (depth := _nesting(text)) > _MAX_DEPTH:
        raise ObjectiveError(
            f"brackets nest {depth} deep; an objective set is a flat JSON array of objects"
        )
    decoder, starts = _DECODER, 0
    fenced = re.findall(r"```(?:json|JSON)?\s*(.*?)```", text, flags=re.DOTALL)
    for chunk in [*fenced, text]:
        for attempt in (chunk, re.sub(r",\s*([\]}])", r"\1", chunk)):  # then without ",]"
            for match in re.finditer(r"\[", attempt):
                starts += 1
                if starts > _MAX_STARTS:
                    raise ObjectiveError(
                        "too many '[' in the answer before an objective set was found; answer "
                        "with the JSON array alone"
                    )
                with contextlib.suppress(json.JSONDecodeError):
                    value, _ = decoder.raw_decode(attempt, match.start())
                    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
                        return value
    example = json.dumps(default_objectives()[:2])
    raise ObjectiveError(
        f"no JSON array of objectives found; answer with a JSON list like {example}"
    )


def validate_objectives(objs: list[dict[str, Any]], setup: PlanSetup | None = None) -> list[str]:
    """Everything wrong with an objective set, as sentences for the LLM (empty: usable)."""
    rx = (setup or PlanSetup()).prescription_gy
    if not objs:
        return ["the objective set is empty; give at least one objective on the target"]
    problems = []
    if len(objs) > _MAX_OBJECTIVES:
        problems.append(f"{len(objs)} objectives are too many; use at most {_MAX_OBJECTIVES}")
    for i, obj in enumerate(objs, 1):
        if not isinstance(obj, dict):
            problems.append(f"objective {i} is not a JSON object")
            continue
        where, kind = f"objective {i}", obj.get("kind")
        volume: Any = obj.get("volume_pct")
        if extra := sorted(set(obj) - _FIELDS):
            problems.append(f"{where} has unknown fields {extra}; allowed: {sorted(_FIELDS)}")
        if obj.get("structure") not in _STRUCTURES:
            name = obj.get("structure")
            problems.append(f"{where}: unknown structure {name!r}; use one of {_STRUCTURES}")
        if kind not in KINDS:
            problems.append(f"{where}: unknown kind {kind!r}; use one of {sorted(KINDS)}")
        if not _number(obj.get("weight")) or not _WEIGHT_MIN <= obj["weight"] <= _WEIGHT_MAX:
            problems.append(
                f"{where}: weight must be a positive number from {_WEIGHT_RANGE} (weights are "
                f"relative; the optimizer cannot work with tiny or huge ones), got "
                f"{_shown(obj.get('weight'))}"
            )
        if not _number(obj.get("dose_gy")) or not 0 <= obj["dose_gy"] <= 2 * rx:
            problems.append(f"{where}: dose_gy must be a number in 0..{2 * rx:g} Gy")
        if kind in KINDS and KINDS[kind][2] is not None:
            if not _number(volume) or not 0 < volume < 100:
                problems.append(f"{where}: kind {kind} needs volume_pct, a number in (0, 100)")
        elif volume is not None:
            problems.append(f"{where}: volume_pct only applies to kinds max_dvh and min_dvh")
    if not any(
        isinstance(o, dict) and o.get("structure") in _TARGETS and o.get("kind") in _PUSHES_DOSE
        for o in objs
    ):
        problems.append(
            f"no objective asks for dose in the target {_TARGETS[0]}; add one of kind "
            f"{' / '.join(_PUSHES_DOSE)} (e.g. squared_deviation at {rx:g} Gy)"
        )
    return problems


def _number(value: Any) -> bool:
    """A finite JSON number (not a bool, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)  # an int of any size is finite


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return "a number too long to print"
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class _State:
    ct: Any
    cst: Any
    stf: Any
    dij: Any
    indices: dict[str, Any]  # structure -> its voxels (flat, numpy order) on the CT grid
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_STATES: dict[str, _State] = {}  # geometry_key -> state, one per process
_STATES_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mute pyRadPlan's log records, warnings and floating-point noise (ray-tracer 0/0s)."""
    import numpy as np

    log = logging.getLogger("pyRadPlan")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _plan(setup: PlanSetup) -> Any:
    pln = _import_pyradplan().PhotonPlan(
        machine="Generic",
        prescribed_dose=setup.prescription_gy,
        num_of_fractions=setup.num_fractions,
    )
    angles = list(setup.gantry_angles)
    pln.prop_stf = {"generator": "photonIMRT", "gantry_angles": angles, "console_progress": False}
    pln.prop_stf.update(couch_angles=[0.0] * len(angles), bixel_width=setup.bixel_width_mm)
    grid = {"resolution": {axis: setup.dose_grid_mm for axis in "xyz"}}
    pln.prop_dose_calc = {"engine": "SVDPB", "dose_grid": grid, "console_progress": False}
    pln.prop_opt = {"problem": "nonlin_fluence", "solver": "scipy", "display": False}
    pln.prop_opt["max_iter"] = setup.max_iterations
    return pln


def _compute_influence(setup: PlanSetup, ct: Any, cst: Any) -> tuple[Any, Any]:
    """The expensive part (seconds): beam geometry and the dose influence matrix."""
    prp = _import_pyradplan()
    stf = prp.generate_stf(ct, cst, _plan(setup))
    return stf, prp.calc_dose_influence(ct, cst, stf, _plan(setup))


def _load_or_compute(setup: PlanSetup, ct: Any, cst: Any) -> tuple[Any, Any]:
    if setup.cache_dir is None:
        return _compute_influence(setup, ct, cst)
    os.makedirs(setup.cache_dir, exist_ok=True)
    path = os.path.join(setup.cache_dir, f"tg119-dij-{setup.geometry_key()}.npz")
    # One process computes while the others wait on the lock (POSIX), then load its file. The
    # file only ever appears whole (os.replace): without the lock, a reader sees all or none.
    with open(path + ".lock", "a") as lock_file:
        with contextlib.suppress(ImportError):
            import fcntl

            fcntl.flock(lock_file, fcntl.LOCK_EX)
        dij = _read_dij(path, setup)
        if dij is not None:
            # The beam geometry is cheap (well under a second) and deterministic: made again
            # rather than stored, so the file holds plain arrays only.
            stf = _import_pyradplan().generate_stf(ct, cst, _plan(setup))
            if stf.total_number_of_bixels == dij.total_num_of_bixels:
                return stf, dij
            _log.warning("dose cache %s does not fit the beams; computing it again", path)
        stf, dij = _compute_influence(setup, ct, cst)
        fd, tmp = tempfile.mkstemp(dir=setup.cache_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                _write_dij(f, dij, setup)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return stf, dij


# The dose matrix on disk is a numpy .npz of plain numeric arrays, read with allow_pickle=False:
# whoever can write the cache folder can at worst make the plans wrong (or the file unreadable,
# and then it is computed again), never run code in the workers. Format 1 was a pickle; its
# files (*.pkl) are never opened.
_GRIDS = ("dose_grid", "ct_grid")
_NUMBERING = ("bixel_num", "ray_num", "beam_num", "alphax", "betax")
_UNSTORED = ("physical_dose_var", "let_dose", "alpha_dose", "sqrt_beta_dose", "rad_depth_cubes")


def _write_dij(f: Any, dij: Any, setup: PlanSetup) -> None:
    import numpy as np
    import scipy.sparse as sp  # type: ignore[import-untyped]

    if dij.physical_dose.size != 1 or any(getattr(dij, n) is not None for n in _UNSTORED):
        raise ValueError("this dose influence matrix has parts the cache does not store")
    matrix = sp.csc_array(dij.physical_dose.flat[0])
    arrays: dict[str, Any] = {
        "key": np.array(setup.geometry_key()),
        "data": matrix.data,
        "indices": matrix.indices,
        "indptr": matrix.indptr,
        "shape": np.array(matrix.shape, dtype=np.int64),
        "num_of_beams": np.array(dij.num_of_beams, dtype=np.int64),
    }
    arrays.update({name: np.asarray(getattr(dij, name)) for name in _NUMBERING})
    for name in _GRIDS:
        grid = getattr(dij, name)
        arrays[f"{name}.resolution"] = np.array([grid.resolution[a] for a in "xyz"])
        arrays[f"{name}.dimensions"] = np.array(grid.dimensions, dtype=np.int64)
        arrays[f"{name}.origin"] = np.asarray(grid.origin)
        arrays[f"{name}.direction"] = np.asarray(grid.direction)
    np.savez(f, **arrays)


def _dij_fields(stored: Any, setup: PlanSetup) -> dict[str, Any]:
    import scipy.sparse as sp  # type: ignore[import-untyped]

    if str(stored["key"]) != setup.geometry_key():
        raise ValueError("the file belongs to another plan geometry")
    fields: dict[str, Any] = {}
    for name in _GRIDS:
        resolution = stored[f"{name}.resolution"]
        fields[name] = {
            "resolution": dict(zip("xyz", map(float, resolution), strict=True)),
            "dimensions": tuple(int(n) for n in stored[f"{name}.dimensions"]),
            "origin": stored[f"{name}.origin"],
            "direction": stored[f"{name}.direction"],
        }
    shape = tuple(int(n) for n in stored["shape"])
    matrix = sp.csc_array((stored["data"], stored["indices"], stored["indptr"]), shape)
    fields["physical_dose"] = matrix
    fields["num_of_beams"] = int(stored["num_of_beams"])
    fields.update({name: stored[name] for name in _NUMBERING})
    return fields


def _read_dij(path: str, setup: PlanSetup) -> Any:
    """The cached dose influence matrix, or None when the file is missing or unusable (not ours,
    another geometry, damaged, or holding anything but numeric arrays)."""
    import zipfile

    import numpy as np

    try:
        # The file object is ours to close: numpy leaks its own on a damaged archive.
        with open(path, "rb") as f:
            stored = np.load(f, allow_pickle=False)  # a pickle raises ValueError, unread
            if not isinstance(stored, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with stored:
                fields = _dij_fields(stored, setup)
        return _import_pyradplan().dij.create_dij(fields)  # pyRadPlan checks the shapes
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        _log.warning("dose cache %s is unusable (%s); computing it again", path, exc)
        return None


def init_worker(setup: PlanSetup) -> None:
    """Load the phantom and dose matrix into this process; a no-op once done for the geometry.

    Usable as a pool initializer. Takes the matrix from ``setup.cache_dir`` when there, else
    computes and stores it. Pins pyRadPlan to numpy on the CPU, for reproducible numbers; thread
    counts come from the worker's environment (see the module docstring).
    """
    key = setup.geometry_key()
    with _STATES_LOCK:
        if key in _STATES:
            return
        prp = _import_pyradplan()
        prp.settings.xp.prefer_gpu = False
        prp.settings.xp.preferred_cpu_array_backend = "numpy"
        with _quiet():
            ct, cst = prp.load_tg119()
            stf, dij = _load_or_compute(setup, ct, cst)
        indices = {voi.name: voi.indices_numpy for voi in cst.vois}
        _STATES[key] = _State(ct, cst, stf, dij, indices)


def evaluate(objectives: list[dict[str, Any]] | str, setup: PlanSetup) -> dict[str, Any]:
    """Optimize the plan for one objective set; report dose metrics and DVHs (JSON-able).

    Never raises for a bad set, nor when the optimizer fails on it: the result is then
    ``{"valid": False, "error": ..., "problems": [...]}``. A plan the optimizer left degenerate
    (no iteration, no dose in the target) is also ``valid: False``, with ``degenerate: True``
    and its metrics. ``converged`` is False when the optimizer stopped at
    ``setup.max_iterations``; ``warnings`` then says so. Every number is finite (strict JSON).
    A missing pyRadPlan raises.
    """
    try:
        objs = parse_objectives(objectives)
    except ObjectiveError as exc:
        return {"valid": False, "error": str(exc), "problems": [str(exc)]}
    if problems := validate_objectives(objs, setup):
        return {"valid": False, "error": "; ".join(problems), "problems": problems}
    init_worker(setup)  # once per process; not part of the evaluation's cost
    state, start = _STATES[setup.geometry_key()], time.process_time()
    try:
        with state.lock, _quiet():  # the structure set is shared and changed per evaluation
            dose, iterations, capped = _optimize(state, objs, setup)
    except Exception as exc:  # the plan failed, not the caller: a result for the LLM to read
        error = f"the optimization failed: {type(exc).__name__}: {exc}"
        return {"valid": False, "error": error, "problems": [error]}
    result = _metrics(state, dose, setup.prescription_gy)
    result.update(iterations=iterations, seconds=round(time.process_time() - start, 3))
    return judge_plan(result, setup, capped=capped)


def judge_plan(result: dict[str, Any], setup: PlanSetup, *, capped: bool) -> dict[str, Any]:
    """Mark an optimized plan degenerate (``valid: False``) or not converged, with reasons.

    ``capped``: the optimizer stopped at its iteration cap. Returns ``result``, changed.
    """
    rx, metrics, iterations = setup.prescription_gy, result["metrics"], result["iterations"]
    problems = []
    if not all(math.isfinite(v) for v in metrics.values()):
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        problems.append(f"the plan's numbers are not finite ({', '.join(bad)})")
        result["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
    if iterations == 0:
        problems.append(
            "the fluence optimizer stopped before its first step, so this is no plan: the "
            f"weights give it nothing to work with (use weights from {_WEIGHT_RANGE}, like the "
            "starting sets' 30 to 10000)"
        )
    target = metrics.get(f"{_METRIC_PREFIX[_TARGETS[0]]}_mean_gy")
    if target is not None and math.isfinite(target) and target < _EMPTY_TARGET * rx:
        problems.append(
            f"the target gets almost no dose (mean {target:.2f} Gy of {rx:g} Gy prescribed): "
            "give the target's objectives more weight relative to the others"
        )
    converged = not capped and iterations < setup.max_iterations
    result["converged"] = converged
    if not converged:
        result["warnings"] = [
            f"the fluence optimizer stopped at its cap of {setup.max_iterations} iterations "
            "before converging: the numbers are of an unfinished plan"
        ]
    if problems:
        result.update(valid=False, degenerate=True, error="; ".join(problems), problems=problems)
    return result


def _optimize(state: _State, objs: list[dict[str, Any]], setup: PlanSetup) -> tuple[Any, int, bool]:
    """The dose on the CT grid, the optimizer's iterations, and whether it hit its cap."""
    import SimpleITK as sitk  # type: ignore[import-untyped]

    prp = _import_pyradplan()
    for voi in state.cst.vois:
        voi.objectives = []
        for o in (o for o in objs if o["structure"] == voi.name):
            cls_name, dose_param, volume_param = KINDS[o["kind"]]
            params = {dose_param: float(o["dose_gy"]), "priority": float(o["weight"])}
            if volume_param is not None:
                params[volume_param] = float(o["volume_pct"])
            voi.objectives.append(getattr(prp.optimization.objectives, cls_name)(**params))
    info: dict[str, Any] = {}
    pln = _plan(setup)
    fluence = prp.fluence_optimization(
        state.ct, state.cst, state.stf, state.dij, pln, opt_info=info
    )
    dose = state.dij.compute_result_ct_grid(fluence)["physical_dose"]
    # SciPy's L-BFGS-B reports status 1 when it stopped at the iteration limit.
    solver = info.get("result_info")
    capped = isinstance(solver, dict) and solver.get("status") == 1
    return sitk.GetArrayFromImage(dose).ravel(), int(info.get("num_iter", -1)), capped


def _metrics(state: _State, dose: Any, rx: float) -> dict[str, Any]:
    """Clinical numbers per structure (whole masks, CT grid) and downsampled cumulative DVHs."""
    import numpy as np

    per = {name: np.sort(dose[ix]) for name, ix in state.indices.items() if len(ix)}
    axis = np.linspace(0.0, max(1.25 * rx, *(float(d[-1]) for d in per.values())), _DVH_POINTS)
    metrics: dict[str, float] = {}
    dvh: dict[str, dict[str, list[float]]] = {}
    for name, d in per.items():
        p = _METRIC_PREFIX.get(name, name.lower())
        at = functools.partial(np.percentile, d)  # D_x% = at(100 - x): dose to the hottest x%
        metrics.update({f"{p}_mean_gy": float(d.mean()), f"{p}_max_gy": float(d[-1])})
        if name in _TARGETS:
            d2, d50, d95, d98 = (float(at(100 - x)) for x in (2, 50, 95, 98))
            metrics.update({f"{p}_d95_gy": d95, f"{p}_d2_gy": d2, f"{p}_d98_gy": d98})
            metrics[f"{p}_homogeneity_index"] = (d2 - d98) / max(d50, 1e-9)
            metrics[f"{p}_v95_pct"] = 100.0 * float(np.mean(d >= 0.95 * rx))
            metrics[f"{p}_min_gy"] = float(d[0])
        else:
            metrics[f"{p}_d10_gy"] = float(at(90))
        volume = 100.0 * (len(d) - np.searchsorted(d, axis, side="left")) / len(d)
        dvh[name] = {"dose_gy": [round(float(x), 3) for x in axis]}
        dvh[name]["volume_pct"] = [round(float(v), 3) for v in volume]
    return {"valid": True, "metrics": metrics, "dvh": dvh}
