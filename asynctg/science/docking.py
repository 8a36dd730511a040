"""Scoring a SMILES string for molecule optimization: AutoDock Vina docking plus drug-likeness.

The TextGrad paper (§3.4) lets a model rewrite a molecule again and again to improve its Vina
docking score and its QED. This module is the CPU side of that loop: plain top-level functions,
picklable, so a process pool (``initializer=init_worker``) or a Dask worker can run them.

- :func:`evaluate` never raises for bad chemistry: whatever the model writes comes back as a
  JSON-able dict with ``valid`` and a short human-readable ``error`` the model can act on.
- Results are deterministic: the molecule is rebuilt from its canonical SMILES (two spellings of
  one molecule get the same conformer), RDKit's embedding and Vina's search are both seeded,
  and Vina runs on one thread. The same SMILES and setup give the same score in any process.
  Deterministic is not seed-independent: for drug-sized ligands Vina's search can land in
  different minima per seed (imatinib at exhaustiveness 8: -12.7 kcal/mol on 3 of 5 seeds,
  -9.4 on 2), so compare such scores across seeds (``DockingSetup.seed``) before trusting them.
- Size limits (heavy atoms, rotatable bonds, SMILES length, an embedding timeout) keep one
  evaluation from running for an hour: Vina's search time grows with atoms times torsions.
- rdkit, vina and meeko are imported lazily, so importing this module works without them;
  :func:`available` says what is missing.

Vina holds the GIL while it docks, so threads gain nothing: a lock serialises them, and
parallelism comes from processes (one Vina, with its affinity maps, per process).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import threading
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data" / "docking"
MAX_SMILES_CHARS = 500  # a 70-heavy-atom molecule needs about 200; longer is garbage
EMBED_TIMEOUT_S = 10  # RDKit gives up on one 3D embedding after this long
_BOX_KEYS = ("center_x", "center_y", "center_z", "size_x", "size_y", "size_z")


class DockingSetupError(ValueError):
    """A receptor or box file is missing or malformed, or a setup parameter is out of range."""


@dataclass(frozen=True)
class DockingSetup:
    """What to dock against and how; :meth:`key` identifies it in evaluation-cache keys."""

    receptor: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    exhaustiveness: int = 8
    seed: int = 1
    conformer_seed: int = 42
    n_poses: int = 1
    max_heavy_atoms: int = 70
    max_rotatable_bonds: int = 15

    def __post_init__(self) -> None:
        for name in ("center", "size"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise DockingSetupError(f"{name} must be three finite numbers, got {values}")
            object.__setattr__(self, name, values)  # lists from JSON become tuples
        if min(self.size) <= 0:
            raise DockingSetupError(f"box size must be positive, got {self.size}")
        if self.exhaustiveness < 1 or self.n_poses < 1:
            raise DockingSetupError("exhaustiveness and n_poses must be at least 1")
        if self.seed == 0:  # Vina treats seed 0 as "pick a random seed"
            raise DockingSetupError("seed 0 makes Vina choose a random seed; use a nonzero seed")

    def key(self) -> str:
        """A short stable id: the receptor's content (not its path) and every parameter."""
        params = {k: v for k, v in asdict(self).items() if k != "receptor"}
        blob = _file_digest(self.receptor) + json.dumps(params, sort_keys=True)
        return "vina-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def default(cls, exhaustiveness: int = 8) -> DockingSetup:
        """Abl kinase (PDB 1IEP) and its box, from AutoDock Vina's basic-docking example."""
        return cls.from_files(
            DATA_DIR / "1iep_receptor.pdbqt",
            DATA_DIR / "1iep_receptor.box.txt",
            exhaustiveness=exhaustiveness,
        )

    @classmethod
    def from_files(cls, receptor: str | Path, box: str | Path, **kw: Any) -> DockingSetup:
        """A receptor .pdbqt and a Vina box file (``center_x = ...`` lines, as Vina's config)."""
        path = Path(receptor).resolve()  # workers may run in another directory
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            raise DockingSetupError(f"receptor {path}: cannot read it ({e.strerror})") from e
        if not any(line.startswith(("ATOM", "HETATM")) for line in text.splitlines()):
            raise DockingSetupError(f"receptor {path}: no ATOM lines, not a PDBQT receptor")
        center, size = read_box(box)
        return cls(receptor=str(path), center=center, size=size, **kw)


def read_box(path: str | Path) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The centre and size in a Vina box file; other ``key = value`` lines are ignored."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        raise DockingSetupError(f"box file {path}: cannot read it ({e.strerror})") from e
    found: dict[str, float] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, value = (part.strip() for part in line.partition("="))
        if not sep:
            raise DockingSetupError(f"box file {path}, line {number}: expected 'name = value'")
        if name in _BOX_KEYS:
            try:
                found[name] = float(value)
            except ValueError:
                raise DockingSetupError(
                    f"box file {path}, line {number}: {name} is not a number: {value!r}"
                ) from None
    missing = [k for k in _BOX_KEYS if k not in found]
    if missing:
        raise DockingSetupError(f"box file {path}: missing {', '.join(missing)}")
    x, y, z, sx, sy, sz = (found[k] for k in _BOX_KEYS)
    return (x, y, z), (sx, sy, sz)


@lru_cache(maxsize=16)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _file_digest(path: str) -> str:
    try:
        stat = Path(path).stat()
    except OSError as e:
        raise DockingSetupError(f"receptor {path}: cannot read it ({e.strerror})") from e
    return _digest_of(path, stat.st_mtime_ns, stat.st_size)


def available() -> str | None:
    """None when rdkit, vina and meeko all import; otherwise what is missing and how to fix it."""
    missing = []
    for name in ("rdkit", "vina", "meeko"):
        try:
            importlib.import_module(name)
        except ImportError as e:  # also catches a package whose own dependency is missing
            missing.append(f"{name} ({e})")
    if not missing:
        return None
    return (
        f"molecule optimization needs rdkit, vina and meeko; missing: {'; '.join(missing)}. "
        "Install them with: pip install 'asynctg[molecule]'"
    )


# One Vina per process, with its affinity maps; keyed by what the maps and the search depend on.
_LOCK = threading.RLock()
_WORKER: tuple[tuple[Any, ...], Any] | None = None


def init_worker(setup: DockingSetup) -> None:
    """Load the receptor and compute its affinity maps once per process (a pool initializer).

    The maps are computed before any ligand is set: computed after one, they cover only that
    ligand's atom types, and the next molecule fails with "Affinity map for atom type ... is not
    present". Calling again with the same setup does nothing; another setup rebuilds.
    """
    global _WORKER
    ident = (setup.receptor, setup.center, setup.size, setup.seed)
    with _LOCK:
        if _WORKER is not None and _WORKER[0] == ident:
            return
        problem = available()
        if problem:
            raise ImportError(problem)
        from rdkit import rdBase
        from vina import Vina  # type: ignore[import-untyped]

        rdBase.DisableLog("rdApp.*")  # RDKit's parse and embedding complaints go to stderr
        if not Path(setup.receptor).is_file():
            raise DockingSetupError(f"receptor {setup.receptor}: no such file")
        v = Vina(sf_name="vina", cpu=1, seed=setup.seed, verbosity=0)
        v.set_receptor(rigid_pdbqt_filename=setup.receptor)
        v.compute_vina_maps(center=list(setup.center), box_size=list(setup.size))
        _WORKER = (ident, v)


def _parse(smiles: str) -> tuple[Any, str | None]:
    """The sanitized RDKit molecule, or None and the reason in words a model can act on."""
    from rdkit import Chem, rdBase

    rdBase.DisableLog("rdApp.*")
    shown = smiles if len(smiles) <= 80 else smiles[:77] + "..."
    if not smiles:
        return None, "empty SMILES"
    if len(smiles) > MAX_SMILES_CHARS:
        return None, f"SMILES is {len(smiles)} characters long (limit {MAX_SMILES_CHARS})"
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:  # parse again unsanitized, to tell bad syntax from bad chemistry
        raw = Chem.MolFromSmiles(smiles, sanitize=False)
        if raw is None:
            return None, f"could not parse SMILES {shown!r}: invalid syntax"
        try:
            Chem.SanitizeMol(raw)
        except Exception as e:
            return None, f"could not parse SMILES {shown!r}: {str(e).strip()}"
        return None, f"could not parse SMILES {shown!r}"
    if mol.GetNumHeavyAtoms() == 0:
        return None, "the molecule has no heavy atoms"
    return mol, None


def properties(smiles: str) -> dict[str, Any]:
    """Validity, canonical SMILES, QED and Lipinski's rule of five; fast (no docking)."""
    from rdkit import Chem
    from rdkit.Chem import QED, Descriptors, rdMolDescriptors

    smiles = smiles.strip()
    mol, error = _parse(smiles)
    out: dict[str, Any] = {"smiles": smiles, "canonical": None, "valid": False, "error": error}
    out |= dict.fromkeys(("qed", "lipinski_violations", "mw", "logp", "hbd", "hba"))
    out |= dict.fromkeys(("heavy_atoms", "rotatable_bonds"))
    if mol is None:
        return out
    mw: float = Descriptors.MolWt(mol)  # type: ignore[attr-defined]
    logp = float(rdMolDescriptors.CalcCrippenDescriptors(mol)[0])  # Crippen.MolLogP
    hbd, hba = rdMolDescriptors.CalcNumHBD(mol), rdMolDescriptors.CalcNumHBA(mol)  # Lipinski's
    try:
        qed: float | None = round(float(QED.qed(mol)), 4)  # type: ignore[no-untyped-call]
    except Exception:  # QED's substructure alerts can fail on exotic molecules
        qed = None
    out |= {
        "canonical": Chem.MolToSmiles(mol),
        "valid": True,
        "qed": qed,
        "lipinski_violations": int(mw > 500) + int(logp > 5) + int(hbd > 5) + int(hba > 10),
        "mw": round(mw, 3),
        "logp": round(logp, 3),
        "hbd": int(hbd),
        "hba": int(hba),
        "heavy_atoms": mol.GetNumHeavyAtoms(),
        "rotatable_bonds": int(rdMolDescriptors.CalcNumRotatableBonds(mol)),
    }
    return out


class _LigandError(Exception):
    """The molecule is valid but could not be turned into a dockable ligand."""


def _ligand_pdbqt(mol: Any, conformer_seed: int) -> str:
    """A seeded 3D conformer (ETKDGv3, then MMFF) written as PDBQT by meeko."""
    from meeko import MoleculePreparation, PDBQTWriterLegacy  # type: ignore[import-untyped]
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

    molh = Chem.AddHs(mol)
    params: Any = rdDistGeom.ETKDGv3()  # the generated stubs mistype its properties
    params.randomSeed = conformer_seed
    if hasattr(params, "timeout"):  # older RDKit releases have no embedding timeout
        params.timeout = EMBED_TIMEOUT_S
    if rdDistGeom.EmbedMolecule(molh, params) != 0:
        params.useRandomCoords = True  # the usual rescue for cages and strained rings
        if rdDistGeom.EmbedMolecule(molh, params) != 0:
            raise _LigandError("could not generate 3D coordinates (RDKit embedding failed)")
    try:
        rdForceFieldHelpers.MMFFOptimizeMolecule(molh, maxIters=500)
    except Exception:  # no MMFF parameters for some atom: dock the unoptimised conformer
        pass
    try:
        setups = MoleculePreparation().prepare(molh)
        pdbqt, ok, message = PDBQTWriterLegacy.write_string(setups[0])
    except Exception as e:
        raise _LigandError(f"meeko could not prepare the ligand: {_first_line(e)}") from e
    if not ok:
        hint = " (an element AutoDock Vina has no atom type for)" if "None type" in message else ""
        raise _LigandError(f"meeko could not prepare the ligand{hint}: {_first_line(message)}")
    return str(pdbqt)


def _first_line(error: object) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


def evaluate(smiles: str, setup: DockingSetup) -> dict[str, Any]:
    """:func:`properties` plus ``vina``, the best docking score in kcal/mol (lower is better).

    Never raises for bad chemistry: an unparsable, oversized or undockable molecule gives
    ``vina`` None and an ``error`` saying why (drug-likeness is kept when the SMILES is valid).
    Set-up problems (a missing receptor, missing packages) do raise.
    """
    props = properties(smiles)
    out = {k: props.pop(k) for k in ("smiles", "canonical", "valid", "error")}
    out["vina"] = None
    out |= props
    if not out["valid"]:
        return out
    from rdkit import Chem

    mol = Chem.MolFromSmiles(out["canonical"])  # one conformer per molecule, not per spelling
    fragments = len(Chem.GetMolFrags(mol))
    if fragments > 1:
        out["error"] = f"{fragments} disconnected fragments ('.'): dock one molecule, no salts"
    elif out["heavy_atoms"] > setup.max_heavy_atoms:
        out["error"] = (
            f"too many heavy atoms to dock ({out['heavy_atoms']} > {setup.max_heavy_atoms})"
        )
    elif out["rotatable_bonds"] > setup.max_rotatable_bonds:
        out["error"] = (
            f"too many rotatable bonds to dock "
            f"({out['rotatable_bonds']} > {setup.max_rotatable_bonds})"
        )
    if out["error"]:
        return out
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # meeko and numpy chatter is noise to the optimizer
        init_worker(setup)
        assert _WORKER is not None
        v = _WORKER[1]
        try:
            v.set_ligand_from_string(_ligand_pdbqt(mol, setup.conformer_seed))
            v.dock(exhaustiveness=setup.exhaustiveness, n_poses=setup.n_poses)
            out["vina"] = round(float(v.energies(n_poses=1)[0][0]), 3)
        except _LigandError as e:
            out["error"] = str(e)
        except Exception as e:  # Vina reports unsupported atom types as TypeError
            out["error"] = f"Vina could not dock the ligand: {_first_line(e)}"
    return out


def depict_svg(smiles: str, width: int = 220, height: int = 160) -> str | None:
    """A 2D drawing of the molecule as an ``<svg>`` element (no XML prolog), None if invalid."""
    from rdkit.Chem.Draw import rdMolDraw2D

    mol, _ = _parse(smiles.strip())
    if mol is None:
        return None
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    svg = str(drawer.GetDrawingText())
    return svg[svg.find("<svg") :]
