"""GEPA: asynctg.gepa against gepa 0.1.4, equal ``max_metric_calls``, 100 ms per call.

    python -m bench gepa [--quick] [--latency 0.1]

Both optimizers run the same search on the same deterministic endpoint: a task call is right
or wrong by a hash of (system prompt, question), and a reflection request gets a new prompt
derived from the parent's text and the minibatch's question ids, whatever the wording. So the
two make the same decisions (the bench checks the candidates are identical) and only the
scheduling differs. Each run is a fresh process. Scenarios:

- ``names``: model names. gepa sends them through litellm; asynctg through its engine; both
  over loopback HTTP to the simulator (``asynctg.sim`` with this module's responder, in a
  process of its own) answering after the latency.
- ``callables``: plain Python callables that sleep the latency (gepa calls them one at a time;
  asynctg runs them in threads).
- ``P=4``: four proposals per iteration (gepa: ``IndependentSampling(4)``, which gepa showed to
  make the same decisions as ``num_parallel_proposals=4``).
- ``val40``: a 40-item validation set.

The floor is the chain of dependent calls the algorithm allows, counted from the run's trace:
the seed's validation wave, then per iteration one wave each for the parents' minibatch
evaluation, the reflection, the children's minibatch evaluation and (when something was
accepted) the validation of the accepted; times the latency.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any

from bench.common import ROOT, python_child, ratio, run_child, table, write_result

#: Scenarios: (name, mode, proposals, train size, val size, max_metric_calls).
SCENARIOS = [
    ("names P=1", "names", 1, 24, 10, 200),
    ("callables P=1", "callables", 1, 24, 10, 200),
    ("names P=4", "names", 4, 24, 10, 300),
    ("callables P=4", "callables", 4, 24, 10, 300),
    ("callables val40", "callables", 1, 24, 40, 400),
]
QUICK = {"names P=1": 90, "callables P=1": 90, "names P=4": 120, "callables P=4": 120}


def _h(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def data(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Question/answer examples in gepa's default format."""
    return [
        {
            "input": f"Q{k}: what is the code of item {k}?",
            "additional_context": {},
            "answer": f"A{k}",
        }
        for k in range(offset, offset + n)
    ]


def task_answer(system: str, user: str) -> str:
    """Right or wrong by a hash of the system prompt and the question id."""
    found = re.search(r"Q(\d+):", user)
    q = found.group(1) if found else "?"
    return f"The code is A{q}." if int(_h(system, q)[:4], 16) % 3 else "I do not know."


def reflection_answer(prompt: str) -> str:
    """A new prompt from the parent's text and the minibatch's question ids."""
    found = re.search(r"prompt#[0-9a-f]+", prompt)
    parent = found.group(0) if found else "prompt#?"
    ids = ",".join(re.findall(r"Q(\d+):", prompt))
    return "```\nprompt#" + _h(parent, ids)[:10] + "\n```"


def respond(body: Mapping[str, Any]) -> str:
    """The simulator's answer: a task call has a system turn, a reflection call does not."""
    messages = list(body.get("messages", []))
    text = [str(m.get("content", "")) for m in messages]
    if messages and messages[0].get("role") == "system":
        return task_answer(text[0], text[-1])
    return reflection_answer(text[-1] if text else "")


SERVER = r"""
import asyncio, sys
from asynctg.sim import SimConfig, SimServer
from bench.gepa import respond
async def main():
    async with SimServer(SimConfig(latency=sys.argv[1], responder=respond)) as sim:
        print(sim.base_url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""

CHILD = r"""
import json, os, sys, time, hashlib
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
from bench.gepa import data, task_answer, reflection_answer, floor_waves
impl, mode, P, n_train, n_val, budget, latency = sys.argv[1:8]
P, n_train, n_val, budget, latency = int(P), int(n_train), int(n_val), int(budget), float(latency)

def task_lm(messages):
    time.sleep(latency)
    return task_answer(messages[0]["content"], messages[-1]["content"])

def reflection_lm(prompt):
    time.sleep(latency)
    return reflection_answer(prompt)

models = dict(task_lm=task_lm, reflection_lm=reflection_lm)
if mode == "names":
    prefix = "openai/" if impl == "gepa" else ""
    models = dict(task_lm=prefix + "sim-task", reflection_lm=prefix + "sim-reflect")
kw = dict(seed_candidate={"system_prompt": "prompt#0"}, trainset=data(n_train),
          valset=data(n_val, 1000), max_metric_calls=budget, seed=0, **models)
if impl == "gepa":
    import gepa
    from gepa.strategies.proposal_sampling import IndependentSampling
else:
    import asynctg.gepa
t0 = time.perf_counter()
if impl == "gepa":
    class Quiet:
        def log(self, m): pass
    sampling = IndependentSampling(P) if P > 1 else None
    r = gepa.optimize(**kw, logger=Quiet(), sampling_strategy=sampling)
    waves = None
else:
    r = asynctg.gepa.optimize(**kw, num_parallel_proposals=P)
    waves = floor_waves(r.trace)
seconds = time.perf_counter() - t0
lineage = json.dumps([r.candidates, r.parents]).encode()
print(json.dumps({"seconds": seconds, "metric_calls": r.total_metric_calls,
    "candidates": len(r.candidates), "waves": waves,
    "fingerprint": hashlib.sha256(lineage).hexdigest()[:12]}))
"""


def floor_waves(trace: list[dict[str, Any]]) -> int:
    """Dependent call waves the run needed (see the module): the seed's, then per iteration."""
    waves = 1
    for record in trace:
        tasks = record.get("tasks", [])
        if not tasks:
            continue
        waves += 1  # the parents' minibatch evaluation
        if any("after" in t for t in tasks):
            waves += 2  # reflection, then the children's minibatch evaluation
        elif any(t.get("note", "").startswith("reflection") for t in tasks):
            waves += 1
        if record.get("accepted"):
            waves += 1  # the accepted children's validation
    return waves


def _server(latency: float) -> tuple[Any, str]:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, f"{latency}s"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    box: dict[str, str] = {}
    reader = threading.Thread(target=lambda: box.setdefault("url", proc.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(30)
    url = box.get("url", "").strip()
    if not url:
        proc.kill()
        raise RuntimeError("the simulator did not start")
    return proc, url


Scenario = tuple[str, str, int, int, int, int]


def _run(impl: str, scenario: Scenario, latency: float, url: str) -> dict[str, Any]:
    _, mode, p, n_train, n_val, budget = scenario
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OPENAI_BASE_URL": url,
        "OPENAI_API_BASE": url,
        "OPENAI_API_KEY": "sk-bench",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    args = [impl, mode, str(p), str(n_train), str(n_val), str(budget), str(latency)]
    child = run_child(python_child("-c", CHILD, *args), env=env, timeout=1800)
    if child.returncode != 0:
        raise RuntimeError(f"{impl} {scenario[0]} failed:\n{child.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench gepa")
    parser.add_argument("--quick", action="store_true", help="smaller budgets, no val40")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per call")
    args = parser.parse_args(argv)
    scenarios = [
        (s[0], s[1], s[2], s[3], s[4], QUICK[s[0]] if args.quick else s[5])
        for s in SCENARIOS
        if not args.quick or s[0] in QUICK
    ]
    proc, url = _server(args.latency)
    rows = []
    try:
        for sc in scenarios:
            ours = _run("asynctg", sc, args.latency, url)
            theirs = _run("gepa", sc, args.latency, url)
            floor = ours["waves"] * args.latency
            rows.append(
                {
                    "scenario": sc[0],
                    "max_metric_calls": sc[5],
                    "metric_calls": ours["metric_calls"],
                    "same_decisions": ours["fingerprint"] == theirs["fingerprint"]
                    and ours["metric_calls"] == theirs["metric_calls"],
                    "floor_s": round(floor, 2),
                    "asynctg_s": round(ours["seconds"], 2),
                    "gepa_s": round(theirs["seconds"], 2),
                    "asynctg_vs_floor": ratio(ours["seconds"], floor),
                    "gepa_vs_floor": ratio(theirs["seconds"], floor),
                    "asynctg_vs_gepa": ratio(ours["seconds"], theirs["seconds"]),
                    "candidates": ours["candidates"],
                }
            )
            print(f"{sc[0]}: done", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    columns = [
        "scenario",
        "metric_calls",
        "same_decisions",
        "floor_s",
        "asynctg_s",
        "gepa_s",
        "asynctg_vs_floor",
        "gepa_vs_floor",
        "asynctg_vs_gepa",
    ]
    print(table(rows, columns))
    settings = {"latency_s": args.latency, "quick": args.quick, "seed": 0}
    path = write_result("gepa", settings, rows)
    print(f"wrote {path}")
    return {"rows": rows}
