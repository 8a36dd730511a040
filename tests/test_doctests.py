"""The examples in the package's docstrings run and print what they show (``doctest``)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import asynctg

#: Scripts, not modules to import: the sandbox's harness reads its program from standard input
#: (wherever an install put it: an environment upgraded in place may keep an old copy); a
#: ``__main__`` runs its command.
_SCRIPTS = {"_harness", "__main__"}


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(asynctg.__path__, "asynctg."):
        if info.name.rsplit(".", 1)[-1] not in _SCRIPTS:
            names.append(info.name)
    return sorted(names)


def _own(name: str) -> ModuleType | None:
    """The module, or None when the name is an old path kept as an alias of another module
    (its docstrings are tested under the module's own name)."""
    module = importlib.import_module(name)
    return module if module.__name__ == name else None


def _run(name: str) -> doctest.TestResults:
    module = _own(name)
    if module is None:
        return doctest.TestResults(0, 0)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    result = _run(name)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


def test_the_examples_are_found() -> None:
    """The finder sees the examples (a broken walk would pass every module above)."""
    assert len(_modules()) > 150
    assert _run("asynctg.apps.prompt_pipeline").attempted >= 2
    assert _run("asynctg.engine.tiers").attempted >= 4
