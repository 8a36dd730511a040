"""Issue 21, "engine and files": the engine's and its files' defences against a hostile or
odd endpoint, a shared cache, a planted link, and nonsense prices."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import asynctg as tg
from asynctg.cli import main
from asynctg.errors import ConfigError

BASE_URL = "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    "price", [(math.nan, 1.0), (1.0, math.inf), (-1.0, 1.0), (1.0, 2.0, 3.0), ("a", 1)]
)
def test_a_non_finite_or_negative_price_is_a_config_error(price: tuple[float, ...]) -> None:
    """get_engine(price=...) refuses NaN, infinite, negative and malformed prices."""
    with pytest.raises(ConfigError, match="price"):
        tg.get_engine("m", base_url=BASE_URL, api_key="k", price=price)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["nan,nan", "1,inf"])
def test_cli_price_nan_is_refused_before_anything_runs(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--price nan,nan` (or inf) exits 2 with the engine's own message, instead
    of a run that reports `$nan` or crashes on its dollar cap."""
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", "--sim", "--price", text, "--max-cost", "1", "--steps", "1"])
    assert exit_info.value.code == 2
    assert "finite numbers >= 0" in capsys.readouterr().err
