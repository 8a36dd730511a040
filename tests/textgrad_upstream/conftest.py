"""What TextGrad's tests need from their environment, given without changing them (README)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asynctg.compat as tg
from asynctg import runtime

HERE = Path(__file__).parent
IMAGE_URL = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
NEEDS_A_CAPABLE_MODEL = {
    "test_bugged": "needs a capable model (gpt-4o-mini) to find and fix the bug; the loopback "
    "simulator keeps the code as it is, so the fixed-code assertions cannot hold",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents and item.name in NEEDS_A_CAPABLE_MODEL:
            item.add_marker(pytest.mark.skip(reason=NEEDS_A_CAPABLE_MODEL[item.name]))


@pytest.fixture(autouse=True, scope="module")
def _clean_environment(request: pytest.FixtureRequest) -> Iterator[None]:
    """TextGrad's tests set OPENAI_API_KEY themselves (and expect it unset at first); the one
    that calls a model gets a loopback simulator as its OpenAI-compatible endpoint."""
    saved = {k: os.environ.pop(k, None) for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    sim = None
    if request.module.__name__.endswith("test_api"):
        from support import SimProcess

        sim = SimProcess()
        os.environ["OPENAI_BASE_URL"] = sim.base_url
        os.environ["OPENAI_API_KEY"] = "sk-test"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tg.config.SingletonBackwardEngine()._engine = None
        runtime._global_backward_engine = None
        if sim is not None:
            tg.shutdown()
            sim.close()


@pytest.fixture(autouse=True)
def _offline_images_and_private_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    image = (HERE / "assets" / "ant.jpg").read_bytes()

    def get(url: str, *args: Any, **kwargs: Any) -> Any:
        if url != IMAGE_URL:
            raise AssertionError(f"a test tried to reach the network: {url}")
        return httpx.Response(200, content=image, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", get)
    monkeypatch.chdir(tmp_path)
