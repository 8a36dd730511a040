"""TextGrad's own evaluation scripts and notebooks, unchanged, through the compat runner.

``textgrad_upstream/evaluation/*.py`` and ``textgrad_upstream/notebooks/{experimental_engines/*,
Local-Model-With-LMStudio}.ipynb`` are TextGrad's files (README there). Scripts run with
``python -m asynctg.compat SCRIPT ARGS`` (or ``asynctg textgrad``) in a private folder, data laid
out in TextGrad's cache layout (``$XDG_CACHE_HOME/textgrad/<task>/<split>.csv``), the
OpenAI-compatible endpoint a loopback simulator. Notebooks switch with ``%load_ext
asynctg.compat`` in a first cell the harness adds; nothing else in them changes.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import SimProcess

HERE = Path(__file__).parent
UPSTREAM = HERE / "textgrad_upstream"
ROOT = HERE.parent
LIBRARIES = ("textgrad", "asynctg.compat")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    server = SimProcess("--record")
    try:
        yield server
    finally:
        server.close()


def _bbh_cache(folder: Path, task: str) -> None:
    """TextGrad's download layout: <cache>/textgrad/<task>/{train,val,test}.csv (50/100/rest)."""
    examples = json.loads((HERE / "data" / "bbh" / f"{task}.json").read_text())["examples"]
    target = folder / "textgrad" / task
    target.mkdir(parents=True)
    for split, part in (
        ("train", examples[:50]),
        ("val", examples[50:150]),
        ("test", examples[150:]),
    ):
        with open(target / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["", "x", "y"])
            writer.writerows([i, e["input"], e["target"]] for i, e in enumerate(part))


def _env(sim: SimProcess, folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OPENAI_BASE_URL=sim.base_url,
        OPENAI_API_KEY="sk-test",
        XDG_CACHE_HOME=str(folder / "cache"),
        ASYNCTG_CACHE_DIR=str(folder / "asynctg-cache"),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    return env


def _kinds(requests: list[dict[str, Any]]) -> Counter[str]:
    def kind(request: dict[str, Any]) -> str:
        text = json.dumps(request["messages"])
        if "<IMPROVED_VARIABLE>" in text:
            return "optimizer"
        if "<OBJECTIVE_FUNCTION>" in text:
            return "backward"
        if "<ACCURACY>" in text:
            return "judge"
        return "forward"

    return Counter(kind(r) for r in requests)


def _prompt_optimization(library: str, sim: SimProcess, folder: Path) -> Counter[str]:
    """evaluation/prompt_optimization.py (4 steps of word sorting) under ``library``; the
    engine calls it made, by kind (``count_engine_calls.py``)."""
    folder.mkdir()
    _bbh_cache(folder / "cache", "word_sorting")
    (folder / "figures").mkdir()
    args = ["--task", "BBH_word_sorting", "--max_epochs", "1", "--num_threads", "4"]
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "count_engine_calls.py"),
            library,
            str(folder / "counts.json"),
            str(UPSTREAM / "evaluation" / "prompt_optimization.py"),
            *args,
            "--do_not_run_larger_model",
        ],
        cwd=folder,  # TextGrad writes ./logs; the script writes ./figures
        env=dict(
            _env(sim, folder),
            TEXTGRAD_LOG_DIR=str(folder / "logs"),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(
        (folder / "figures" / "results_BBH_word_sorting_gpt-3.5-turbo-0125.json").read_text()
    )
    assert len(results["prompt"]) == 5  # the start and four steps
    return Counter(json.loads((folder / "counts.json").read_text()))


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("textgrad") is None, reason="textgrad 0.1.8 is not installed"
)
def test_prompt_optimization_script_runs_unchanged(sim: SimProcess, tmp_path: Path) -> None:
    """evaluation/prompt_optimization.py runs unchanged under compat and asks for as many
    forward, backward, optimizer and judge calls as under TextGrad 0.1.8 (cache hits counted)."""
    counts = {lib: _prompt_optimization(lib, sim, tmp_path / lib) for lib in LIBRARIES}
    compat, reference = counts["asynctg.compat"], counts["textgrad"]
    # 612 forward: 100 test + 100 validation + 4 steps x (3 training + 100 validation), each
    # judged by the task's LLM evaluation (the training loss too); 24 backward; 4 optimizer.
    assert reference == {"forward": 612, "judge": 612, "backward": 24, "optimizer": 4}
    assert compat == reference


def _mmlu_cache(folder: Path) -> None:
    """Four made-up questions in Hugging Face's cais/mmlu record layout."""
    target = folder / "textgrad" / "mmlu"
    target.mkdir(parents=True)
    rows = [
        {
            "question": f"What is {a} + {b}?",
            "choices": [str(a + b + d) for d in (-1, 0, 1, 2)],
            "answer": 1,
        }
        for a, b in ((2, 3), (4, 4), (10, 7), (6, 9))
    ]
    (target / "machine_learning_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_solution_optimization_script_runs_unchanged(sim: SimProcess, tmp_path: Path) -> None:
    """evaluation/solution_optimization.py runs unchanged via ``asynctg textgrad``: items carry
    the test-time objective and evaluation function, as TextGrad's do."""
    _mmlu_cache(tmp_path / "cache")
    sim.reset()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asynctg",
            "textgrad",
            str(UPSTREAM / "evaluation" / "solution_optimization.py"),
            "--max_iterations",
            "1",
            "--num_threads",
            "4",
        ],
        cwd=tmp_path,
        env=_env(sim, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    solutions = json.loads((tmp_path / "MMLU_machine_learning_predictions.json").read_text())
    assert len(solutions) == 4
    assert all(len(s["predictions"]) == 3 for s in solutions.values())  # zero-shot, 1 step, vote
    kinds = _kinds(sim.requests())
    # Per question: a zero-shot answer, then one test-time loss, one backward, one step.
    assert (kinds["forward"], kinds["backward"], kinds["optimizer"]) == (8, 4, 4)


NOTEBOOK_SETUP = """\
import os
os.environ["OPENAI_BASE_URL"] = {base_url!r}
os.environ["ASYNCTG_CACHE_DIR"] = {cache!r}
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import httpx, openai
_image = open({image!r}, "rb").read()
def _offline_get(url, *args, **kwargs):
    if url != {url!r}:
        raise RuntimeError("the notebook tried to reach the network: " + url)
    return httpx.Response(200, content=_image, request=httpx.Request("GET", url))
httpx.get = _offline_get
_client_init = openai.OpenAI.__init__
def _to_simulator(self, *args, base_url=None, **kwargs):
    if base_url == "http://localhost:1234/v1":  # the LM Studio server the notebook expects
        base_url = {base_url!r}
    _client_init(self, *args, base_url=base_url, **kwargs)
openai.OpenAI.__init__ = _to_simulator
%load_ext asynctg.compat
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "name",
    [
        "experimental_engines/Tutorial-ExperimentalEngines",
        "experimental_engines/Tutorial-PrimitivesExperimentalEngines",
        "Local-Model-With-LMStudio",
    ],
)
def test_notebook_runs_unchanged(
    name: str, sim: SimProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every cell of the notebook runs in a real kernel switched by ``%load_ext asynctg.compat``,
    its ``import textgrad`` lines unchanged."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for var in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR", "MPLCONFIGDIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(UPSTREAM / "notebooks" / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:  # no test installs anything
        if cell.cell_type == "code" and cell.source.lstrip().startswith("!pip install"):
            cell.source = "# (install line turned off by the harness) " + cell.source
    setup = NOTEBOOK_SETUP.format(
        base_url=sim.base_url,
        cache=str(tmp_path / "cache"),
        image=str(UPSTREAM / "assets" / "ant.jpg"),
        url="https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg",
    )
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup))
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        (i, out["ename"], out["evalue"][:300])
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert errors == []
