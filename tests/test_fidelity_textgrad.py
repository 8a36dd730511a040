"""Fidelity to TextGrad 0.1.8: the same script makes the same kinds of calls under both libraries.

One prompt-optimization step of the paper (BBH object counting, string-match loss, B=4) runs
twice from the same script text, ``bench/compat_script.py``: once importing ``textgrad`` itself,
once ``asynctg.compat``. Each run gets a fresh recording simulator; the recorded requests are
then classified by their tags (``<IMPROVED_VARIABLE>``: optimizer; ``<OBJECTIVE_FUNCTION>``:
backward; the rest: forward) and compared. TextGrad is the oracle for the shape of a step.

Each run is a subprocess of this interpreter, so TextGrad's import-time side effects (log
files, a disk cache of answers) land in temporary folders and never reach this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import SimProcess, message_text, request_kind

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "compat_script.py"
DATA = ROOT / "tests" / "data" / "bbh" / "object_counting.json"
B = 4
MODULES = ("textgrad", "asynctg.compat")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("textgrad") is None,
        reason="textgrad 0.1.8 is not installed (pip install -e '.[reference]')",
    ),
]

#: One step of B, in the data file's order (both libraries then see the same questions).
_STEP_ARGS = ("--batch-size", str(B), "--steps", "1", "--val-size", "0", "--no-shuffle")
_FEEDBACK = re.compile(r"<FEEDBACK>(.*?)</FEEDBACK>", re.DOTALL)


def _message(request: dict[str, Any], role: str) -> str:
    return "\n".join(message_text(m["content"]) for m in request["messages"] if m["role"] == role)


def _run(module: str, workdir: Path) -> dict[str, Any]:
    workdir.mkdir()
    sim = SimProcess("--latency", "0", "--record", log=workdir / "sim.log")
    try:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": sim.base_url,
            "OPENAI_API_KEY": "sk-test",
            "TEXTGRAD_LOG_DIR": str(workdir / "logs"),
            "XDG_CACHE_HOME": str(workdir / "cache"),  # fresh: no answer comes from a cache
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no price-list download at import
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--module", module, *_STEP_ARGS, "--data", str(DATA)],
            cwd=workdir,  # anything written to ./ stays in the temporary folder
            env=env,
            capture_output=True,
            text=True,
            timeout=50,
        )
        assert done.returncode == 0, f"{module} run failed:\n{done.stderr[-4000:]}"
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["wall"] = time.perf_counter() - started
        result["requests"] = sim.requests()
        return result
    finally:
        sim.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("fidelity")
    yield {m: _run(m, base / m.replace(".", "_")) for m in MODULES}


@pytest.fixture(scope="module")
def first_batch() -> list[str]:
    examples = json.loads(DATA.read_text())["examples"]
    return [ex["input"] for ex in examples[:B]]


@pytest.mark.parametrize("module", MODULES)
def test_a_step_makes_3b_plus_1_calls(runs: dict[str, dict[str, Any]], module: str) -> None:
    """One step with B=4 makes 3B+1 = 13 calls: B forward, 2B backward, 1 optimizer."""
    kinds = [request_kind(r) for r in runs[module]["requests"]]
    assert len(kinds) == 3 * B + 1
    assert kinds.count("forward") == B
    assert kinds.count("backward") == 2 * B
    assert kinds.count("optimizer") == 1


@pytest.mark.parametrize("module", MODULES)
def test_forward_calls_send_the_variable_as_system_prompt(
    runs: dict[str, dict[str, Any]], module: str, first_batch: list[str]
) -> None:
    """The B forward calls carry the system-prompt variable's value and the batch's questions.

    The compat layer sends them concurrently, so they reach the server in any order.
    """
    run = runs[module]
    forward = [r for r in run["requests"] if request_kind(r) == "forward"]
    assert [_message(r, "system") for r in forward] == [run["initial_prompt"]] * B
    assert sorted(_message(r, "user") for r in forward) == sorted(first_batch)


@pytest.mark.parametrize("module", MODULES)
def test_backward_calls_carry_the_feedback_tags(
    runs: dict[str, dict[str, Any]], module: str
) -> None:
    """Each of the 2B backward calls marks <ROLE>, <VARIABLE> and <OBJECTIVE_FUNCTION>."""
    backward = [r for r in runs[module]["requests"] if request_kind(r) == "backward"]
    assert len(backward) == 2 * B
    for request in backward:
        user = _message(request, "user")
        for tag in ("<ROLE>", "<VARIABLE>", "<OBJECTIVE_FUNCTION>"):
            assert tag in user, f"{module}: a backward prompt lacks {tag}"


@pytest.mark.parametrize("module", MODULES)
def test_the_optimizer_call_has_one_feedback_block_per_sample(
    runs: dict[str, dict[str, Any]], module: str
) -> None:
    """The optimizer's prompt holds B <FEEDBACK>...</FEEDBACK> blocks, one per sample."""
    (optimizer,) = [r for r in runs[module]["requests"] if request_kind(r) == "optimizer"]
    user = _message(optimizer, "user")
    assert user.count("</FEEDBACK>") == B
    assert len(_FEEDBACK.findall(user)) == B
    assert all(block.strip() for block in _FEEDBACK.findall(user))


def test_both_libraries_make_the_same_calls(runs: dict[str, dict[str, Any]]) -> None:
    """Per-kind call counts are equal, and the forward calls are identical, across libraries."""
    counts = {m: Counter(request_kind(r) for r in runs[m]["requests"]) for m in MODULES}
    assert counts["textgrad"] == counts["asynctg.compat"]
    forward = {  # as a multiset: compat's concurrent calls arrive in any order
        m: sorted(
            json.dumps(r["messages"], sort_keys=True)
            for r in runs[m]["requests"]
            if request_kind(r) == "forward"
        )
        for m in MODULES
    }
    assert forward["textgrad"] == forward["asynctg.compat"]
    # both steps really changed the prompt from the feedback
    for m in MODULES:
        assert runs[m]["final_prompt"] != runs[m]["initial_prompt"]
