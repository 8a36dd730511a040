"""The package's layout: public names exported, old import paths kept, imports only go down."""

from __future__ import annotations

import importlib
import inspect

import pytest

import asynctg
from asynctg import errors


def _error_classes() -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    ]


def test_every_error_of_the_tree_is_exported_from_asynctg() -> None:
    """Every exception class defined in asynctg.errors is a public name of asynctg itself."""
    missing = [
        cls.__name__
        for cls in _error_classes()
        if cls.__name__ not in asynctg.__all__ or getattr(asynctg, cls.__name__, None) is not cls
    ]
    assert missing == []


def test_every_error_class_is_drawn_in_the_tree_of_the_docstring() -> None:
    """The tree in asynctg.errors' docstring names every exception class the module defines."""
    doc = errors.__doc__ or ""
    assert [c.__name__ for c in _error_classes() if c.__name__ not in doc] == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("asynctg.apps.checkpoint", "asynctg.runs.checkpoint"),
        ("asynctg.apps.progress", "asynctg.runs.progress"),
        ("asynctg.apps.estimate", "asynctg.runs.estimate"),
        ("asynctg.apps.sandbox", "asynctg.runs.sandbox"),
        ("asynctg.apps.run", "asynctg.runs.loop"),
        ("asynctg.apps.design", "asynctg.science.design"),
        ("asynctg.apps.docking", "asynctg.science.docking"),
        ("asynctg.apps.dosimetry", "asynctg.science.dosimetry"),
        ("asynctg.apps.molecule", "asynctg.science.molecule"),
        ("asynctg.apps.radiotherapy", "asynctg.science.radiotherapy"),
    ],
)
def test_a_moved_module_is_still_importable_by_its_old_path(old: str, new: str) -> None:
    """An old module path imports (no warning) as the very module object of its new place."""
    assert importlib.import_module(old) is importlib.import_module(new)


def test_the_report_helpers_keep_their_old_names() -> None:
    """asynctg.apps.report still offers write_report and the chart and diff helpers."""
    from asynctg.apps import report
    from asynctg.output import svg

    assert report.line_chart_svg is svg.line_chart_svg
    assert report.xy_chart_svg is svg.xy_chart_svg
    assert callable(report.write_report) and callable(report.diff_html)
