"""The package's layout: public names exported, old import paths kept, imports only go down."""

from __future__ import annotations

import ast
import graphlib
import importlib
import inspect
import re
from pathlib import Path

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


# --- the import graph ------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
LAYERS_DOC = REPO / "docs" / "architecture.md"


def _layers() -> dict[str, int]:
    """The layer of each package, read from the table in docs/architecture.md."""
    text = LAYERS_DOC.read_text(encoding="utf-8")
    block = text.split("<!-- layers:", 1)[1].split("```", 2)[1]
    layers: dict[str, int] = {}
    for line in block.splitlines():
        match = re.fullmatch(r"\s*(\d+)\s+(.+)", line)
        if match:
            for name in match.group(2).split(","):
                layers[name.strip()] = int(match.group(1))
    return layers


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str) -> str:
    """``asynctg.X`` for anything under ``asynctg.X``; ``asynctg`` for the facade itself."""
    return ".".join(module.split(".")[:2])


def _imports(path: Path, modules: set[str], root: Path = REPO) -> set[str]:
    """The asynctg modules ``path`` imports, anywhere in it (functions, TYPE_CHECKING too)."""
    name = _module_name(path, root)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "asynctg")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "asynctg":
                continue
            for alias in node.names:  # `from asynctg import apps` imports asynctg.apps
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return found


def _package_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Package -> the other packages its modules import."""
    paths = sorted((root / "asynctg").rglob("*.py"))
    modules = {_module_name(p, root) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        source = _package_of(_module_name(path, root))
        targets = {_package_of(t) for t in _imports(path, modules, root)}
        graph.setdefault(source, set()).update(targets - {source})
    return graph


def test_every_package_has_a_layer_in_the_architecture_page() -> None:
    """Each package and top-level module of asynctg is placed in docs/architecture.md's table."""
    layers = _layers()
    assert sorted(set(_package_graph()) - set(layers)) == []


def test_no_import_goes_up_a_layer() -> None:
    """No module imports a package of a higher layer than its own (docs/architecture.md)."""
    layers = _layers()
    upward = [
        f"{source} (layer {layers[source]}) imports {target} (layer {layers[target]})"
        for source, targets in _package_graph().items()
        for target in sorted(targets)
        if source in layers and target in layers and layers[target] > layers[source]
    ]
    assert upward == []


def test_the_packages_import_each_other_without_a_cycle() -> None:
    """The import graph between packages is acyclic (a topological order exists)."""
    graph = _package_graph()
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError on a cycle
    assert set(order) >= set(graph)


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """The walker maps a relative import in a function to its package, and a cycle is found."""
    module = tmp_path / "asynctg" / "loadtest" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..cli import main\n    from asynctg import apps\n")
    names = {"asynctg.cli", "asynctg.apps", "asynctg.loadtest.x"}
    found = _imports(module, names, tmp_path)
    assert found == {"asynctg.cli", "asynctg.apps"}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())


def test_every_folder_of_modules_is_a_regular_package() -> None:
    """Every folder of asynctg holding modules has an __init__.py and is tracked by git, so
    the wheel (which finds packages by their __init__) ships it: a namespace package works
    from a checkout and vanishes from the install."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    tracked = set(
        subprocess.run(
            ["git", "ls-files", "asynctg"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    folders = {p.parent for p in (root / "asynctg").rglob("*.py") if "__pycache__" not in p.parts}
    for folder in sorted(folders):
        init = (folder / "__init__.py").relative_to(root).as_posix()
        assert init in tracked, f"{init} is missing or untracked (check .gitignore)"
