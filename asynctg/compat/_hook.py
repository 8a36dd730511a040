"""Make ``import textgrad`` (and every ``textgrad.X``) give ``asynctg.compat`` (and its ``X``).

``install()`` puts a finder first on ``sys.meta_path``: inside the process, a TextGrad script's
``import textgrad as tg`` and ``from textgrad.tasks import load_task`` both get compat objects,
even when TextGrad itself is installed, so no import line mixes the two libraries. Modules of the
real TextGrad imported before ``install()`` are dropped from ``sys.modules`` (with a warning:
objects already made from them stay TextGrad's).

Used by ``python -m asynctg.compat SCRIPT``, ``asynctg textgrad SCRIPT`` and, in a notebook,
``%load_ext asynctg.compat``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["install", "installed", "uninstall"]

_SOURCE = "textgrad"
_TARGET = "asynctg.compat"


def _target(fullname: str) -> str | None:
    if fullname == _SOURCE:
        return _TARGET
    if fullname.startswith(_SOURCE + "."):
        return _TARGET + fullname[len(_SOURCE) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        # The compat module itself stands in for the TextGrad one: one object under both names.
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the compat module was imported (and ran) under its own name."""


class TextGradAlias(importlib.abc.MetaPathFinder):
    """Finds ``textgrad[.X]`` as ``asynctg.compat[.X]`` (see the module)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        aliased = _target(fullname)
        if aliased is None:
            return None
        if importlib.util.find_spec(aliased) is None:
            return None  # a path TextGrad does not have either: the usual ModuleNotFoundError
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(aliased), is_package=True)


def installed() -> bool:
    """True when ``textgrad`` imports resolve to ``asynctg.compat`` in this process."""
    return any(isinstance(f, TextGradAlias) for f in sys.meta_path)


def install() -> None:
    """Resolve ``textgrad`` and its submodules to ``asynctg.compat`` from now on (idempotent)."""
    if installed():
        return
    real = [
        name
        for name, module in list(sys.modules.items())
        if _target(name) is not None and not _is_compat(module)
    ]
    for name in real:
        del sys.modules[name]
    if real:
        warnings.warn(
            "TextGrad was imported before asynctg.compat took over the 'textgrad' name; objects "
            "made from it stay TextGrad's. Switch before importing textgrad (first line or "
            "first cell).",
            RuntimeWarning,
            stacklevel=2,
        )
    sys.meta_path.insert(0, TextGradAlias())


def uninstall() -> None:
    """Undo ``install()`` (the aliases already imported are dropped too)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, TextGradAlias)]
    for name in [n for n in sys.modules if _target(n) is not None]:
        if _is_compat(sys.modules[name]):
            del sys.modules[name]


def _is_compat(module: Any) -> bool:
    return str(getattr(module, "__name__", "")).startswith(_TARGET)
