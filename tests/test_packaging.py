"""Packaging: every extra installs in one command, and the science extras install together.

CI's tox env installs the package through its extras alone (no second pip command), so the
plan and docking tests, which fail rather than skip under CI, prove the one-command install;
these tests keep tox.ini and pyproject.toml from drifting back to a ``--no-deps`` step.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _extras() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        name: [Requirement(spec) for spec in specs]
        for name, specs in project["optional-dependencies"].items()
    }


def test_tox_test_env_installs_only_through_extras() -> None:
    """tox's test env gets molecule, radiotherapy and dask from its extras, no pip step after."""
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    env = tox["testenv"]
    extras = {e.strip() for e in env.get("extras", "").replace("\n", ",").split(",")}
    assert {"molecule", "radiotherapy", "dask"} <= extras
    assert not env.get("commands_pre", "").strip()
    assert not env.get("deps", "").strip()
    assert "pip install" not in env.get("commands", "")


def test_radiotherapy_extra_installs_pyradplan_itself() -> None:
    """The radiotherapy extra names pyRadPlan, so pip resolves its pins with the other extras'."""
    names = {r.name.lower() for r in _extras()["radiotherapy"]}
    assert "pyradplan" in names


@pytest.mark.skipif(not os.environ.get("CI"), reason="dev environments may predate the extra")
def test_pyradplan_declared_requirements_are_installed() -> None:
    """Under CI every requirement pyRadPlan declares is installed at a version it accepts."""
    declared = importlib.metadata.requires("pyRadPlan") or []
    unmet = []
    for requirement in map(Requirement, declared):
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an optional extra of pyRadPlan's (gui, torch, ...)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(f"{requirement} (missing)")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{requirement} (have {installed})")
    assert not unmet, f"pyRadPlan installed without its dependencies: {unmet}"
