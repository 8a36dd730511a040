"""Every module path of TextGrad 0.1.8 imports under ``asynctg.compat`` with its public names.

``textgrad_upstream/module_names.json`` lists TextGrad 0.1.8's 50 modules and the public names
each defines or re-exports from TextGrad itself (read from TextGrad's source with ``ast``: names
only). When TextGrad is installed, the list is checked against it too.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import pytest

MANIFEST = json.loads(
    (Path(__file__).parent / "textgrad_upstream" / "module_names.json").read_text()
)
#: Names of ``textgrad/__init__.py`` that set up the JSON log file TextGrad writes on import;
#: importing asynctg.compat writes no file (docs/textgrad-deviations.md).
NOT_PROVIDED = {"textgrad": {"LOG_DIR", "log_file", "sh"}}


def _compat_name(module: str) -> str:
    return "asynctg.compat" + module[len("textgrad") :]


def test_manifest_lists_textgrads_fifty_modules() -> None:
    """The manifest holds TextGrad 0.1.8's 50 module paths."""
    assert len(MANIFEST) == 50
    assert all(m == "textgrad" or m.startswith("textgrad.") for m in MANIFEST)


@pytest.mark.parametrize("module", sorted(MANIFEST))
def test_module_path_imports_with_textgrads_public_names(module: str) -> None:
    """``asynctg.compat.<path>`` imports and defines every public name TextGrad's module has."""
    compat = importlib.import_module(_compat_name(module))
    wanted = set(MANIFEST[module]) - NOT_PROVIDED.get(module, set())
    missing = sorted(n for n in wanted if not hasattr(compat, n))
    assert missing == []


def test_manifest_matches_installed_textgrad(monkeypatch: pytest.MonkeyPatch) -> None:
    """When TextGrad 0.1.8 is installed, its module list is the manifest's."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    spec = importlib.util.find_spec("textgrad")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("TextGrad is not installed")
    found = {"textgrad"} | {
        info.name
        for info in pkgutil.walk_packages(
            spec.submodule_search_locations, "textgrad.", onerror=lambda _: None
        )
    }
    # walk_packages imports packages to list their children; it never imports leaf modules.
    assert set(MANIFEST) <= found | {"textgrad.utils.image_utils"}
    assert {m for m in found if not m.startswith("textgrad.utils")} <= set(MANIFEST)
