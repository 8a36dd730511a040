"""What TextGrad code written outside this project needs from ``asynctg.compat`` (issue 24):
the runner and import hook, TextGrad's data shapes and task texts, the ``textgrad`` logger,
calls in flight at exit, ``ChatExternalClient``'s client settings, ``CachedEngine`` without
diskcache."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import SimProcess

import asynctg.compat as tg
from asynctg.transport import HTTPRequest

HERE = Path(__file__).parent
ROOT = HERE.parent
FORMAT_LINE = "'Answer: $VALUE' where VALUE is a numerical value."


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimProcess]:
    server = SimProcess("--latency", "300ms")
    try:
        yield server
    finally:
        server.close()


def test_runner_gives_textgrad_names_argv_main_and_exit_code(tmp_path: Path) -> None:
    """``python -m asynctg.compat SCRIPT ARGS``: every ``textgrad`` path is compat, even with
    TextGrad installed; argv, ``__main__`` and the exit code are the script's."""
    script = tmp_path / "s.py"
    script.write_text(
        "import sys, textgrad as tg\n"
        "from textgrad.optimizer.optimizer import TextualGradientDescent\n"
        "from textgrad.tasks import load_task\n"
        "print(tg.__name__, TextualGradientDescent.__module__, load_task.__module__)\n"
        "print(sys.argv[1:], __name__)\n"
        "sys.exit(7)\n"
    )
    done = _run(["-m", "asynctg.compat", str(script), "a", "--b"], tmp_path)
    assert done.returncode == 7
    lines = done.stdout.splitlines()
    assert lines[0] == "asynctg.compat asynctg.compat.optimizer.optimizer asynctg.compat.tasks"
    assert lines[1] == "['a', '--b'] __main__"


def test_cli_runner_shows_the_scripts_traceback_and_exits_1(tmp_path: Path) -> None:
    """``asynctg textgrad SCRIPT``: an uncaught error prints the script's traceback, exit 1."""
    script = tmp_path / "boom.py"
    script.write_text("def f():\n    return 1 / 0\nf()\n")
    done = _run(["-m", "asynctg", "textgrad", str(script)], tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f'Traceback (most recent call last):\n  File "{script}"')
    assert "ZeroDivisionError" in done.stderr and "runpy" not in done.stderr


def test_call_never_read_is_sent_before_exit(slow_sim: SimProcess, tmp_path: Path) -> None:
    """A script whose last line is ``answer = model(question)`` still sends and completes it."""
    slow_sim.reset()
    code = (
        "import asynctg.compat as tg\n"
        "model = tg.BlackboxLLM(tg.get_engine('gpt-4o', cache=False, base_url="
        f"{slow_sim.base_url!r}))\n"
        "answer = model(tg.Variable('What is 2+2?', role_description='question', "
        "requires_grad=False))\n"
    )
    done = _run(["-c", code], tmp_path, OPENAI_API_KEY="sk-test")
    assert done.returncode == 0, done.stderr
    assert slow_sim.stats()["ok"] == 1


def _log_records(module: str, sim: SimProcess, folder: Path) -> list[list[Any]]:
    """``log_records_script.py`` under ``module``: the ``textgrad`` logger's records."""
    folder.mkdir()
    done = _run(
        [str(HERE / "log_records_script.py"), module],
        folder,  # importing TextGrad writes ./logs and a disk cache: keep both in here
        OPENAI_BASE_URL=sim.base_url,
        OPENAI_API_KEY="sk-test",
        XDG_CACHE_HOME=str(folder / "cache"),
        TEXTGRAD_LOG_DIR=str(folder / "logs"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records: list[list[Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return records


def _phases(records: list[list[Any]]) -> list[Counter[tuple[str, tuple[str, ...]]]]:
    """(message, extra keys) per phase; a phase ends with an optimizer step's last record."""
    phases: list[Counter[tuple[str, tuple[str, ...]]]] = [Counter()]
    for message, keys, _ in records:
        phases[-1][(message, tuple(keys))] += 1
        if message.endswith("updated text"):
            phases.append(Counter())
    return phases


@pytest.mark.skipif(
    importlib.util.find_spec("textgrad") is None, reason="textgrad 0.1.8 is not installed"
)
def test_textgrad_logger_gets_textgrads_forward_backward_and_step_records(
    tmp_path: Path,
) -> None:
    """The same forward/backward/step logs the same (message, extra keys) to ``textgrad`` under
    TextGrad 0.1.8 and compat, phase by phase; each feedback prompt record is followed by its
    gradient record, and the optimizer's response record holds the raw reply."""
    sim = SimProcess("--latency", "0")
    try:
        runs = {m: _log_records(m, sim, tmp_path / m) for m in ("textgrad", "asynctg.compat")}
    finally:
        sim.close()
    reference, compat = runs["textgrad"], runs["asynctg.compat"]
    assert _phases(compat) == _phases(reference)
    assert any(message.startswith("_backward_through") for message, _, _ in compat)
    for message, _, extra in compat:
        if message.endswith("optimizer response"):
            assert "<IMPROVED_VARIABLE>" in extra["optimizer.response"]
    messages = [message for message, _, _ in compat]
    for i, message in enumerate(messages):
        if message.startswith("_backward_through") and not message.endswith(" gradient"):
            assert messages[i + 1] == message.removesuffix(" prompt") + " gradient"


def test_textgrad_logger_gets_forward_records(
    slow_sim: SimProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A forward call logs TextGrad's record to the ``textgrad`` logger, ``extra={"text": ...}``."""
    engine = tg.get_engine("gpt-4o", base_url=slow_sim.base_url, api_key="sk-test", cache=False)
    system = tg.Variable("Be brief.", role_description="system prompt", requires_grad=False)
    question = tg.Variable("What is 2+2?", role_description="question", requires_grad=False)
    with caplog.at_level(logging.INFO, logger="textgrad"):
        answer = tg.BlackboxLLM(engine, system)(question)
        value = answer.value
    records = [r for r in caplog.records if r.name == "textgrad"]
    assert [r.getMessage() for r in records] == ["LLMCall function forward"]
    assert records[0].text == f"System:Be brief.\nQuery: What is 2+2?\nResponse: {value}"  # type: ignore[attr-defined]


def test_load_instance_task_items_carry_objective_and_eval_fn(tmp_path: Path) -> None:
    """MMLU instance items are (question, answer, test_time_objective, instance_eval_fn)."""
    folder = tmp_path / "mmlu"
    folder.mkdir()
    row = {"question": "What is 2 + 3?", "choices": ["4", "5", "6", "7"], "answer": 1}
    (folder / "machine_learning_test.jsonl").write_text(json.dumps(row) + "\n")
    items = tg.tasks.load_instance_task("MMLU_machine_learning", None, root=str(tmp_path))
    question, answer, objective, evaluate = items[0]
    assert answer == "B" and "'Answer: $LETTER'" in question and "B) 5" in question
    assert callable(objective)
    right = tg.Variable("so... Answer: B", role_description="solution", requires_grad=True)
    wrong = tg.Variable("Answer: C", role_description="solution", requires_grad=True)
    assert (evaluate(right), evaluate(wrong)) == (1.0, 0.0)


def _textgrad_bbh_description(tmp_path: Path, task: str) -> str:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    big_bench_hard = pytest.importorskip("textgrad.tasks.big_bench_hard")
    folder = tmp_path / task
    folder.mkdir()
    with open(folder / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["", "x", "y"], [0, "q", "a"]])
    description: str = big_bench_hard.BigBenchHard(task, root=str(tmp_path)).get_task_description()
    return description


@pytest.mark.parametrize("task", ["object_counting", "word_sorting"])
def test_bbh_description_has_textgrads_answer_format_line(tmp_path: Path, task: str) -> None:
    """Each BBH task gets TextGrad's kind of description, ending in its answer-format line."""
    train, _, _, _ = tg.tasks.load_task(f"BBH_{task}", None, root=str(HERE / "data" / "bbh"))
    ours = train.get_task_description()
    assert ours.endswith(FORMAT_LINE)
    theirs = _textgrad_bbh_description(tmp_path, task)
    line = theirs[theirs.index("The last line") :]
    assert ours.endswith(line)


def test_chat_external_client_carries_the_clients_settings() -> None:
    """Base URL, credential, default headers and query and timeout of the openai client go
    with every request; an Azure client sends to its deployment with ``api-key``."""
    openai = pytest.importorskip("openai")
    from asynctg.compat.engine._client import engine_options

    client = openai.OpenAI(
        base_url="http://127.0.0.1:1/v1",
        api_key="sk-client",
        default_headers={"X-Team": "a"},
        default_query={"tenant": "t1"},
        timeout=12,
    )
    options = engine_options(client, "m")
    assert options["base_url"] == "http://127.0.0.1:1/v1" and options["timeout"] == 12.0
    sent = options["transport"].adapt(
        HTTPRequest("POST", "http://127.0.0.1:1/v1/chat/completions", headers={"a": "b"})
    )
    assert sent.url.endswith("/chat/completions?tenant=t1")
    assert sent.headers["x-team"] == "a" and sent.headers["authorization"] == "Bearer sk-client"
    assert "sk-client" not in repr(options["transport"])
    azure = openai.AzureOpenAI(
        azure_endpoint="https://r.example.com", api_key="k", api_version="2024-06-01"
    )
    options = engine_options(azure, "gpt-4o")
    assert options["base_url"] == "https://r.example.com/openai/deployments/gpt-4o"
    sent = options["transport"].adapt(HTTPRequest("POST", "https://x/chat/completions", headers={}))
    assert sent.headers["api-key"] == "k" and sent.url.endswith("?api-version=2024-06-01")
    from asynctg.compat.engine.local_model_openai_api import ChatExternalClient

    engine = ChatExternalClient(client=client, model_string="m", cache=False)
    assert engine.base_url == "http://127.0.0.1:1/v1"


def test_cached_engine_works_without_diskcache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A custom engine deriving from ``CachedEngine`` caches on a fresh install (no diskcache)."""
    from asynctg.compat.engine.base import CachedEngine

    monkeypatch.setitem(sys.modules, "diskcache", None)  # import diskcache -> ImportError
    engine = CachedEngine(str(tmp_path / "cache"))
    assert engine._check_cache("p") is None
    engine._save_cache("p", "reply")
    assert engine._check_cache("p") == "reply"
