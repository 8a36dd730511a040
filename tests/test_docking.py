"""The molecule evaluator (asynctg.science.docking): box files, bad SMILES, scores, determinism.

Docking runs at exhaustiveness 1 against the shipped Abl kinase receptor: about a second per
small molecule. Without rdkit, vina and meeko the chemistry tests skip, except under CI, where
a missing package must fail loudly rather than skip.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from asynctg.science import docking
from asynctg.science.docking import DockingSetup, DockingSetupError

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"
CAFFEINE = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
BOX = "center_x = 1.5\ncenter_y = -2\ncenter_z = 3.25\nsize_x = 20\nsize_y = 18.5\nsize_z = 22\n"


@pytest.fixture(scope="module")
def setup() -> DockingSetup:
    for name in ("rdkit", "vina", "meeko"):
        if os.environ.get("CI"):
            importlib.import_module(name)  # CI installs the molecule extra: never skip there
        else:
            pytest.importorskip(name)
    return DockingSetup.default(exhaustiveness=1)


def test_read_box_takes_centre_and_size_and_ignores_other_lines(tmp_path: Path) -> None:
    box = tmp_path / "box.txt"
    box.write_text("# a comment\nreceptor = r.pdbqt\n\n" + BOX + "exhaustiveness = 8  # ok\n")
    assert docking.read_box(box) == ((1.5, -2.0, 3.25), (20.0, 18.5, 22.0))
    shipped = docking.read_box(docking.DATA_DIR / "1iep_receptor.box.txt")
    assert shipped == ((15.19, 53.903, 16.917), (20.0, 20.0, 20.0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOX.replace("size_y = 18.5\n", ""), "missing size_y"),
        (BOX.replace("= -2", "= west"), "line 2: center_y is not a number"),
        (BOX + "center_x 4\n", "line 7: expected 'name = value'"),
        ("", "missing center_x, center_y, center_z, size_x, size_y, size_z"),
        (BOX.replace("size_x = 20", "size_x = -20"), "box size must be positive"),
    ],
)
def test_bad_box_files_raise_a_value_error_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    box = tmp_path / "box.txt"
    box.write_text(text)
    receptor = docking.DATA_DIR / "1iep_receptor.pdbqt"
    with pytest.raises(ValueError, match=message):
        DockingSetup.from_files(receptor, box)


def test_missing_or_malformed_files_are_named(tmp_path: Path) -> None:
    box = tmp_path / "box.txt"
    box.write_text(BOX)
    with pytest.raises(DockingSetupError, match=r"box file .*nothere\.txt: cannot read"):
        docking.read_box(tmp_path / "nothere.txt")
    with pytest.raises(DockingSetupError, match=r"receptor .*absent\.pdbqt: cannot read"):
        DockingSetup.from_files(tmp_path / "absent.pdbqt", box)
    (tmp_path / "r.pdbqt").write_text("this is not a receptor\n")
    with pytest.raises(DockingSetupError, match=r"r\.pdbqt: no ATOM lines"):
        DockingSetup.from_files(tmp_path / "r.pdbqt", box)


def test_setup_key_is_stable_and_follows_parameters_and_receptor_content(tmp_path: Path) -> None:
    default = DockingSetup.default()
    assert default.key() == DockingSetup.default().key()
    assert default.key().startswith("vina-") and len(default.key()) == 21
    assert DockingSetup.default(exhaustiveness=1).key() != default.key()
    copy = tmp_path / "copy.pdbqt"  # the key is the content, not where the file lives
    shutil.copy(default.receptor, copy)
    assert DockingSetup.from_files(copy, docking.DATA_DIR / "1iep_receptor.box.txt") == (
        DockingSetup(str(copy.resolve()), default.center, default.size)
    )
    moved = DockingSetup(str(copy), default.center, default.size)
    assert moved.key() == default.key()
    with copy.open("a") as f:
        f.write("REMARK changed\n")
    assert DockingSetup(str(copy), default.center, default.size).key() != default.key()
    with pytest.raises(DockingSetupError, match="random seed"):
        DockingSetup(default.receptor, default.center, default.size, seed=0)


def test_available_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vina", None)  # makes `import vina` raise ImportError
    message = docking.available()
    assert message is not None
    assert "vina" in message and "pip install 'asynctg[molecule]'" in message


def test_importing_the_module_imports_no_chemistry() -> None:
    code = (
        "import sys, asynctg.science.docking\n"
        "print(sorted({'rdkit', 'vina', 'meeko', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("smiles", "message"),
    [
        ("xyz(", "could not parse SMILES 'xyz(': invalid syntax"),
        ("C1=CC=CC=C1C(C)(C)(C)C", "Explicit valence"),
        ("c1cccc1", "kekulize"),
        ("   ", "empty SMILES"),
        ("[H][H]", "no heavy atoms"),
        ("C(" * 400, "800 characters long"),
    ],
)
def test_invalid_smiles_is_reported_not_raised(
    setup: DockingSetup, smiles: str, message: str
) -> None:
    result = docking.evaluate(smiles, setup)
    assert result["valid"] is False and result["vina"] is None and result["qed"] is None
    assert message in result["error"]
    assert result["smiles"] == smiles.strip()
    json.dumps(result)


@pytest.mark.parametrize(
    ("smiles", "message"),
    [
        ("C" * 80, "too many heavy atoms to dock (80 > 70)"),
        ("CCCCCCCCCCCCCCCCCCCCO", "too many rotatable bonds to dock (18 > 15)"),
        ("CC(=O)[O-].[Na+]", "2 disconnected fragments"),
        ("OB(O)c1ccccc1", "Atom type B is not a valid AutoDock type"),
    ],
)
def test_valid_but_undockable_keeps_drug_likeness(
    setup: DockingSetup, smiles: str, message: str
) -> None:
    result = docking.evaluate(smiles, setup)
    assert result["valid"] is True and result["vina"] is None
    assert message in result["error"]
    assert result["qed"] is not None and result["lipinski_violations"] is not None


@pytest.mark.parametrize(
    ("smiles", "qed"), [(ASPIRIN, 0.550), (IBUPROFEN, 0.822), (CAFFEINE, 0.538)]
)
def test_known_drugs_dock_with_negative_scores(
    setup: DockingSetup, smiles: str, qed: float
) -> None:
    result = docking.evaluate(smiles, setup)
    assert result["valid"] is True and result["error"] is None
    assert -12.0 < result["vina"] < -3.0
    assert result["qed"] == pytest.approx(qed, abs=0.01)
    assert result["lipinski_violations"] == 0
    assert 150 < result["mw"] < 250
    json.dumps(result)


def test_properties_skip_docking(setup: DockingSetup) -> None:
    result = docking.properties(f"  {IBUPROFEN} ")
    assert "vina" not in result
    assert result["canonical"] == "CC(C)Cc1ccc(C(C)C(=O)O)cc1"
    assert (result["hbd"], result["hba"], result["lipinski_violations"]) == (1, 1, 0)
    assert docking.properties("C" * 40)["lipinski_violations"] == 2  # heavy and greasy


def test_scores_are_deterministic_in_process_and_across_processes(setup: DockingSetup) -> None:
    first = docking.evaluate(ASPIRIN, setup)
    docking.evaluate(IBUPROFEN, setup)
    other = DockingSetup(setup.receptor, setup.center, setup.size, exhaustiveness=1, seed=7)
    docking.evaluate(ASPIRIN, other)  # a different setup rebuilds the worker's Vina
    assert docking.evaluate(ASPIRIN, setup) == first
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        1, mp_context=context, initializer=docking.init_worker, initargs=(setup,)
    ) as pool:
        assert pool.submit(docking.evaluate, ASPIRIN, setup).result(timeout=50) == first


def test_spellings_of_one_molecule_score_the_same(setup: DockingSetup) -> None:
    a = docking.evaluate(IBUPROFEN, setup)
    b = docking.evaluate("OC(=O)C(C)c1ccc(CC(C)C)cc1", setup)
    assert a["canonical"] == b["canonical"] and a["vina"] == b["vina"]


def test_depict_svg(setup: DockingSetup) -> None:
    svg = docking.depict_svg(CAFFEINE, width=300, height=200)
    assert svg is not None and svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "width='300px'" in svg
    assert docking.depict_svg("xyz(") is None
