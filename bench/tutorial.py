"""TextGrad's Prompt-Optimization tutorial, run as written under TextGrad 0.1.8 and under
``asynctg.compat``: requests sent and wall time, against one simulator.

    python -m bench tutorial [--latency 20ms] [--modules textgrad,asynctg.compat]

The code cells of ``tests/textgrad_upstream/notebooks/Tutorial-Prompt-Optimization.ipynb`` run
in a fresh process per module (the ``!pip`` line dropped; for compat the imports changed),
with the BBH object-counting data from ``tests/data/bbh`` laid out where each library looks
for it, and fresh cache folders: TextGrad caches replies on disk by default, and so does
compat. The simulator counts the requests that reached it. TextGrad 0.1.8 from PyPI needs one
fix to run its own tutorial on current pandas (numpy integers read back from its CSVs fail its
type assertion; its later commits convert them): the script applies that conversion first.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, run_child, sim_reset, sim_stats, simulator, table, write_result

NOTEBOOK = ROOT / "tests/textgrad_upstream/notebooks/Tutorial-Prompt-Optimization.ipynb"
DATA = ROOT / "tests/data/bbh/object_counting.json"


def _script(module: str) -> str:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    code = re.sub(r"^\s*!pip.*$", "", code, flags=re.M)
    if module == "textgrad":
        # TextGrad 0.1.8 from PyPI asserts on the numpy.int64 answers pandas reads back from
        # its own CSVs; its later commits turn numpy scalars into ints first. Do the same.
        code = _TEXTGRAD_NUMPY_FIX + code
    else:
        code = re.sub(r"^import textgrad as tg", f"import {module} as tg", code, flags=re.M)
        code = re.sub(r"^from textgrad(\.| )", rf"from {module}\1", code, flags=re.M)
    return code


_TEXTGRAD_NUMPY_FIX = """
import textgrad.tasks.big_bench_hard as _bbh
_getitem = _bbh.BigBenchHard.__getitem__
_bbh.BigBenchHard.__getitem__ = lambda self, i: tuple(
    v.item() if hasattr(v, "item") else v for v in _getitem(self, i)
)
"""


def _textgrad_layout(cache: Path) -> None:
    """BBH as TextGrad's loader leaves it after downloading: <cache>/textgrad/<task>/*.csv."""
    examples = json.loads(DATA.read_text())["examples"]
    splits = {"train": examples[:50], "val": examples[50:150], "test": examples[150:]}
    folder = cache / "textgrad" / "object_counting"
    folder.mkdir(parents=True)
    for split, rows in splits.items():
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["", "x", "y"])
            for i, row in enumerate(rows):
                writer.writerow([i, row["input"], row["target"]])


def run_one(url: str, module: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-tutorial-") as tmp:
        scratch = Path(tmp)
        _textgrad_layout(scratch / "cache")
        script = scratch / "tutorial.py"
        script.write_text(_script(module))
        env = {
            "OPENAI_BASE_URL": url,
            "OPENAI_API_KEY": "sk-bench",
            "XDG_CACHE_HOME": str(scratch / "cache"),
            "ASYNCTG_CACHE_DIR": str(scratch / "asynctg-cache"),
            "TEXTGRAD_DATA_DIR": str(DATA.parent),
            "TEXTGRAD_LOG_DIR": str(scratch / "logs"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONPATH": str(ROOT),
        }
        import os

        sim_reset(url)
        started = time.perf_counter()
        child = run_child([sys.executable, str(script)], env={**os.environ, **env}, cwd=scratch)
        seconds = time.perf_counter() - started
    stats = sim_stats(url)
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr)
    return {
        "module": module,
        "exit": child.returncode,
        "requests": stats["requests"],
        "wall_s": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench tutorial")
    parser.add_argument("--quick", action="store_true", help="the same (one run per module)")
    parser.add_argument("--latency", default="20ms")
    parser.add_argument("--modules", default="textgrad,asynctg.compat")
    args = parser.parse_args(argv)
    rows = []
    with simulator("--latency", args.latency) as url:
        for module in args.modules.split(","):
            rows.append(run_one(url, module))
            print(f"  {module}: {rows[-1]}", flush=True)
    print(table(rows, ["module", "exit", "requests", "wall_s"]))
    results = {"rows": rows, "latency": args.latency}
    write_result("tutorial", vars(args), results)
    return results
