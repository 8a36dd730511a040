"""TextGrad's tutorial notebooks, every cell, in a real Jupyter kernel, on ``asynctg.compat``.

The notebooks in ``tests/textgrad_upstream/notebooks`` are TextGrad's (outputs cleared). The
harness changes only their imports (``textgrad`` -> ``asynctg.compat``) and turns their
``!pip install textgrad`` lines into comments (no test installs anything or reaches the
network); a first cell it adds points the OpenAI-compatible endpoint at a loopback simulator,
the task data at ``tests/data/bbh`` and the image the MultiModal tutorial downloads at a local
file. Every cell must run; the only error allowed is the one the Test-Time-Loss tutorial raises
on purpose before running model-written code ("Remove this if you'd like to run the code!").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import SimProcess

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

HERE = Path(__file__).parent
NOTEBOOKS = HERE / "textgrad_upstream" / "notebooks"
IMAGE_URL = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
#: The Test-Time-Loss tutorial's own guard, raised in TextGrad too.
ON_PURPOSE = "This function will run the code returned by GPT-4o"

SETUP = """\
import os
os.environ["OPENAI_BASE_URL"] = {base_url!r}
os.environ["OPENAI_API_KEY"] = "sk-notebook-test"
os.environ["TEXTGRAD_DATA_DIR"] = {data!r}
os.environ["ASYNCTG_CACHE_DIR"] = {cache!r}
import httpx
_image = open({image!r}, "rb").read()
def _offline_get(url, *args, **kwargs):
    if url != {url!r}:
        raise RuntimeError("the notebook tried to reach the network: " + url)
    return httpx.Response(200, content=_image, request=httpx.Request("GET", url))
httpx.get = _offline_get
"""


def _rewrite(source: str) -> str:
    source = re.sub(
        r"^(\s*)import textgrad as tg\b", r"\1import asynctg.compat as tg", source, flags=re.M
    )
    source = re.sub(r"^(\s*)from textgrad(\.| )", r"\1from asynctg.compat\2", source, flags=re.M)
    return re.sub(
        r"^(\s*)!pip install",
        r"\1# (install line turned off by the harness) !pip install",
        source,
        flags=re.M,
    )


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    server = SimProcess("--latency", "2ms")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jupyter's and IPython's own files go to the test's folder, not the user's home."""
    for name in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR", "MPLCONFIGDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return tmp_path


def _run(name: str, sim: SimProcess, folder: Path) -> list[dict[str, Any]]:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = _rewrite(cell.source)
    setup = SETUP.format(
        base_url=sim.base_url,
        data=str(HERE / "data" / "bbh"),
        cache=str(folder / "cache"),
        image=str(HERE / "textgrad_upstream" / "assets" / "ant.jpg"),
        url=IMAGE_URL,
    )
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup))
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()
    failures = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and ON_PURPOSE not in out.get("evalue", ""):
                failures.append(
                    {
                        "cell": i,
                        "source": cell.source[:300],
                        "error": out["ename"],
                        "value": out["evalue"][:500],
                    }
                )
    return failures


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name",
    [
        "Tutorial-Primitives",
        "Tutorial-Solution-Optimization",
        "Tutorial-MultiModal",
        "Tutorial-Test-Time-Loss-for-Code",
        "Tutorial-Prompt-Optimization",
    ],
)
def test_tutorial_runs_every_cell(name: str, sim: SimProcess, kernel_env: Path) -> None:
    """Every cell of the tutorial runs in a real kernel with only the import changed."""
    assert _run(name, sim, kernel_env) == []
