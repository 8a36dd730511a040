"""asynctg.gepa: gepa 0.1.4's decisions, its adapters unchanged, concurrency, resume."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
gepa = pytest.importorskip("gepa")

import asynctg.gepa as ag  # noqa: E402
from asynctg import prompts  # noqa: E402
from asynctg.errors import ConfigError  # noqa: E402
from asynctg.gepa.selection import EpochMinibatches  # noqa: E402

# --- a deterministic endpoint: answers depend on the information in a request, not its words --


def _h(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def _data(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "input": f"Q{k}: what is the code of item {k}?",
            "additional_context": {},
            "answer": f"A{k}",
        }
        for k in range(offset, offset + n)
    ]


def task_lm(messages: list[dict[str, str]]) -> str:
    """Right or wrong by a hash of (system prompt, question id)."""
    system = messages[0]["content"]
    found = re.search(r"Q(\d+):", messages[-1]["content"])
    assert found is not None
    q = found.group(1)
    return f"The code is A{q}." if int(_h(system, q)[:4], 16) % 3 else "I do not know."


def reflection_lm(prompt: str) -> str:
    """A new text from the parent's text and the minibatch's question ids, in their order."""
    found = re.search(r"prompt#[0-9a-f]+", prompt)
    assert found is not None
    ids = ",".join(re.findall(r"Q(\d+):", prompt))
    return "Here it is:\n```\nprompt#" + _h(found.group(0), ids)[:10] + "\n```"


class _Batch:
    def __init__(self, outputs: list[Any], scores: list[float], traces: Any) -> None:
        self.outputs, self.scores, self.trajectories = outputs, scores, traces
        self.objective_scores = None
        self.num_metric_calls = None


class TwoPart:
    """A blocking gepa-style adapter with two components (for round robin and merge)."""

    propose_new_texts = None

    def evaluate(
        self, batch: list[Any], candidate: dict[str, str], capture_traces: bool = False
    ) -> Any:
        outs, scores, traces = [], [], []
        for ex in batch:
            q = ex["input"].split(":")[0]
            a = int(_h(candidate["plan"], q)[:4], 16) % 2
            b = int(_h(candidate["style"], q)[:4], 16) % 3 != 0
            outs.append(f"out {q}")
            scores.append((a + b) / 2)
            traces.append({"q": ex["input"], "s": (a + b) / 2})
        return _Batch(outs, scores, traces if capture_traces else None)

    def make_reflective_dataset(self, candidate: Any, eval_batch: Any, components: Any) -> Any:
        return {
            c: [{"Inputs": t["q"], "Feedback": f"score {t['s']}"} for t in eval_batch.trajectories]
            for c in components
        }


def reflection_two(prompt: str) -> str:
    found = re.search(r"(plan|style)#[0-9a-f]+", prompt)
    assert found is not None
    name = found.group(0)
    ids = ",".join(re.findall(r"Q(\d+):", prompt))
    return "```text\n" + name.split("#")[0] + "#" + _h(name, ids)[:8] + "\n```"


class _Quiet:
    def log(self, message: str) -> None:
        pass


def _same(a: Any, g: Any) -> None:
    assert a.candidates == g.candidates
    assert a.parents == g.parents
    assert a.val_subscores == g.val_subscores
    assert a.per_val_instance_best_candidates == g.per_val_instance_best_candidates
    assert a.total_metric_calls == g.total_metric_calls
    assert a.discovery_eval_counts == g.discovery_eval_counts
    assert a.num_full_val_evals == g.num_full_val_evals
    assert a.best_idx == g.best_idx


def _gepa(parallel: int, **kw: Any) -> Any:
    from gepa.strategies.proposal_sampling import IndependentSampling

    sampling = IndependentSampling(parallel) if parallel > 1 else None
    return gepa.optimize(**kw, logger=_Quiet(), sampling_strategy=sampling)


# --- fidelity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "strategy", "minibatch"),
    list(itertools.product([0, 7], ["pareto", "current_best", "epsilon_greedy"], [2, 3, 5])),
)
def test_single_proposal_matches_gepa(seed: int, strategy: str, minibatch: int) -> None:
    """One proposal per iteration: the same candidates, lineage, front and metric calls as gepa."""
    kw: dict[str, Any] = dict(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(13),
        valset=_data(9, 100),
        task_lm=task_lm,
        reflection_lm=reflection_lm,
        max_metric_calls=300,
        seed=seed,
        candidate_selection_strategy=strategy,
        reflection_minibatch_size=minibatch,
    )
    ours = ag.optimize(**kw)
    theirs = _gepa(1, **kw)
    _same(ours, theirs)
    assert ours.num_candidates > 3  # the run did accept and reject proposals


@pytest.mark.parametrize(
    ("seed", "selector", "merge"),
    list(itertools.product([0, 5], ["round_robin", "all"], [False, True])),
)
def test_two_components_and_merge_match_gepa(seed: int, selector: str, merge: bool) -> None:
    """A two-component sync adapter, round robin or all, with or without merges, as gepa."""
    kw: dict[str, Any] = dict(
        seed_candidate={"plan": "plan#0", "style": "style#0"},
        trainset=_data(10),
        valset=_data(12, 100),
        adapter=TwoPart(),
        reflection_lm=reflection_two,
        max_metric_calls=500,
        seed=seed,
        module_selector=selector,
        use_merge=merge,
    )
    _same(ag.optimize(**kw), _gepa(1, **kw))


def test_merges_happen_and_match_gepa() -> None:
    """A run where merges are accepted makes gepa's merge decisions too."""
    kw: dict[str, Any] = dict(
        seed_candidate={"plan": "plan#0", "style": "style#0"},
        trainset=_data(10),
        valset=_data(12, 100),
        adapter=TwoPart(),
        reflection_lm=reflection_two,
        max_metric_calls=500,
        seed=5,
        use_merge=True,
    )
    ours = ag.optimize(**kw)
    assert any(len(p) == 2 for p in ours.parents)
    _same(ours, _gepa(1, **kw))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_parallel_proposals_match_gepa_independent_sampling(seed: int) -> None:
    """num_parallel_proposals=P decides as gepa with IndependentSampling(P)."""
    kw: dict[str, Any] = dict(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(13),
        valset=_data(9, 100),
        task_lm=task_lm,
        reflection_lm=reflection_lm,
        max_metric_calls=400,
        seed=seed,
    )
    ours = ag.optimize(**kw, num_parallel_proposals=4)
    _same(ours, _gepa(4, **kw))
    assert any(len(t["tasks"]) == 4 for t in ours.trace)


def test_minibatches_follow_gepas_sampler() -> None:
    """The epoch sampler yields gepa's minibatches for a seed, padding included."""
    import random

    from gepa.strategies.batch_sampler import EpochShuffledBatchSampler

    class _State:
        i = 0

    ids = list(range(11))
    ours = EpochMinibatches(4, random.Random(3))
    theirs = EpochShuffledBatchSampler(4, rng=random.Random(3))
    loader = gepa.core.data_loader.ListDataLoader(ids)
    for i in range(9):
        _State.i = i
        for _ in range(2):
            assert ours.next_ids(ids, i) == theirs.next_minibatch_ids(loader, _State())


# --- adapters -----------------------------------------------------------------------------


def test_gepa_default_adapter_runs_unchanged() -> None:
    """gepa's own DefaultAdapter (a callable model) runs through asynctg.gepa as it is."""
    from gepa.adapters.default_adapter.default_adapter import DefaultAdapter

    kw: dict[str, Any] = dict(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(8),
        valset=_data(6, 100),
        reflection_lm=reflection_lm,
        max_metric_calls=120,
        seed=2,
    )
    ours = ag.optimize(adapter=DefaultAdapter(model=task_lm), **kw)
    theirs = _gepa(1, adapter=DefaultAdapter(model=task_lm), **kw)
    _same(ours, theirs)
    assert ours.num_candidates > 1


async def test_async_adapter_is_awaited_and_batches_fan_out() -> None:
    """An async adapter is awaited on the run's loop; parallel proposals overlap in time."""
    inner = TwoPart()
    active = 0
    peak = 0

    class AsyncTwoPart:
        propose_new_texts = None

        async def evaluate(self, batch: Any, candidate: Any, capture_traces: bool = False) -> Any:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            active -= 1
            return inner.evaluate(batch, candidate, capture_traces)

        async def make_reflective_dataset(self, *args: Any) -> Any:
            return inner.make_reflective_dataset(*args)

    result = await ag.aoptimize(
        seed_candidate={"plan": "plan#0", "style": "style#0"},
        trainset=_data(12),
        valset=_data(6, 100),
        adapter=AsyncTwoPart(),
        reflection_lm=reflection_two,
        max_metric_calls=200,
        num_parallel_proposals=3,
    )
    assert result.total_metric_calls is not None and result.total_metric_calls >= 200
    assert peak >= 3


def test_user_template_with_gepa_placeholders_is_used() -> None:
    """A reflection template written for gepa fills in the same two placeholders."""
    seen: list[str] = []

    def lm(prompt: str) -> str:
        seen.append(prompt)
        return reflection_lm(prompt)

    ag.optimize(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(6),
        valset=_data(3, 100),
        task_lm=task_lm,
        reflection_lm=lm,
        reflection_prompt_template="MINE <curr_param> || <side_info> END",
        max_metric_calls=30,
    )
    assert seen and all(p.startswith("MINE prompt#") and p.endswith("END") for p in seen)
    with pytest.raises(ConfigError, match="side_info"):
        ag.optimize(
            seed_candidate={"s": "x"},
            trainset=_data(2),
            task_lm=task_lm,
            reflection_lm=lm,
            reflection_prompt_template="only <curr_param>",
            max_metric_calls=5,
        )


def test_default_prompt_carries_text_examples_and_format() -> None:
    """The default reflection request holds the current text, each example's fields, and asks
    for a fenced block."""
    text = prompts.gepa_reflection_prompt(
        "be terse",
        [{"Inputs": "Q1: x", "Generated Outputs": "y", "Feedback": "wrong, it is z"}],
        None,
    )
    for part in ("be terse", "Q1: x", "wrong, it is z", "Generated Outputs", "```"):
        assert part in text
    assert "<curr_param>" not in text and "<side_info>" not in text


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        ("intro\n```\nnew text\n```\nbye", "new text"),
        ("```markdown\nnew text\n```", "new text"),
        ("```\nunclosed", "unclosed"),
        ("no fence at all", "no fence at all"),
        ("a\n```\none\n```\nmid\n```\ntwo\n```", "one\n```\nmid\n```\ntwo"),
    ],
)
def test_extract_fenced_reads_the_new_text(reply: str, text: str) -> None:
    """The new text is what lies between the first and the last fence."""
    assert ag.extract_fenced(reply) == text


# --- blocking form, resume ------------------------------------------------------------------


async def test_blocking_optimize_works_inside_a_running_loop() -> None:
    """optimize() called where a loop runs (a notebook cell) runs in a worker thread."""
    result = ag.optimize(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(6),
        valset=_data(4, 100),
        task_lm=task_lm,
        reflection_lm=reflection_lm,
        max_metric_calls=40,
    )
    assert result.total_metric_calls is not None and result.total_metric_calls >= 40
    assert threading.current_thread() is threading.main_thread()


def test_resume_from_run_dir_continues_the_same_run(tmp_path: Path) -> None:
    """A run stopped by its budget and resumed with a larger one ends as one uninterrupted run."""
    kw: dict[str, Any] = dict(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(13),
        valset=_data(9, 100),
        task_lm=task_lm,
        reflection_lm=reflection_lm,
        seed=4,
    )
    whole = ag.optimize(**kw, max_metric_calls=300)
    ag.optimize(**kw, max_metric_calls=120, run_dir=str(tmp_path))
    resumed = ag.optimize(**kw, max_metric_calls=300, run_dir=str(tmp_path))
    assert resumed.candidates == whole.candidates
    assert resumed.parents == whole.parents
    assert resumed.total_metric_calls == whole.total_metric_calls
    assert (tmp_path / "gepa_state.json").exists()


def test_stop_file_ends_the_run(tmp_path: Path) -> None:
    """A gepa.stop file in run_dir stops the search before its next iteration."""
    (tmp_path / "gepa.stop").write_text("")
    result = ag.optimize(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(4),
        task_lm=task_lm,
        reflection_lm=reflection_lm,
        run_dir=str(tmp_path),
    )
    assert result.num_candidates == 1 and result.total_metric_calls == 4


def test_progress_reports_every_iteration() -> None:
    """The progress callback sees each iteration's metric calls, front size and best score."""
    seen: list[ag.Progress] = []
    result = ag.optimize(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(6),
        valset=_data(4, 100),
        task_lm=task_lm,
        reflection_lm=reflection_lm,
        max_metric_calls=60,
        progress=seen.append,
    )
    assert [p.iteration for p in seen] == list(range(len(seen)))
    assert seen[-1].metric_calls == result.total_metric_calls
    assert seen[-1].best_score == max(result.val_aggregate_scores)
    assert all(p.frontier_size >= 1 for p in seen)


def test_bad_arguments_are_config_errors() -> None:
    """Unsupported settings fail before anything is sent, as ConfigError."""
    base: dict[str, Any] = dict(seed_candidate={"s": "x"}, trainset=_data(2), max_metric_calls=5)
    with pytest.raises(ConfigError):
        ag.optimize(**base, task_lm=task_lm, reflection_lm=reflection_lm, frontier_type="hybrid")
    with pytest.raises(ConfigError):
        ag.optimize(**base, task_lm=task_lm, adapter=TwoPart(), reflection_lm=reflection_lm)
    with pytest.raises(ConfigError):
        ag.optimize(**base, task_lm=task_lm)  # no reflection_lm and no proposer of its own
    with pytest.raises(ConfigError):
        ag.optimize(**base, task_lm=task_lm, reflection_lm=reflection_lm, wandb_project="x")


def test_async_callables_are_awaited() -> None:
    """Async task and reflection callables are awaited, and decide as their sync twins."""

    async def atask(messages: list[dict[str, str]]) -> str:
        await asyncio.sleep(0)
        return task_lm(messages)

    async def areflect(prompt: str) -> str:
        return reflection_lm(prompt)

    kw: dict[str, Any] = dict(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(8),
        valset=_data(5, 100),
        max_metric_calls=100,
    )
    a = ag.optimize(**kw, task_lm=atask, reflection_lm=areflect)
    b = ag.optimize(**kw, task_lm=task_lm, reflection_lm=reflection_lm)
    assert a.candidates == b.candidates and a.total_metric_calls == b.total_metric_calls


# --- the TextGrad proposer ----------------------------------------------------------------


def test_textgrad_proposer_runs_backward_then_one_tgd_step() -> None:
    """proposer="textgrad": one backward call per minibatch record, then one optimizer call,
    and the optimizer's new value becomes the child's text."""
    calls: dict[str, int] = {"backward": 0, "optimizer": 0}

    class Teacher:
        def generate(self, content: Any, system_prompt: str | None = None, **kw: Any) -> str:
            text = str(content)
            if "<IMPROVED_VARIABLE>" in text:
                calls["optimizer"] += 1
                parent = re.search(r"prompt#[0-9a-f]+", text)
                assert parent is not None
                return f"<IMPROVED_VARIABLE>prompt#{_h(parent.group(0))[:6]}</IMPROVED_VARIABLE>"
            assert "<OBJECTIVE_FUNCTION>" in text
            calls["backward"] += 1
            return "Name the item code explicitly."

    result = ag.optimize(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(6),
        valset=_data(4, 100),
        task_lm=task_lm,
        reflection_lm=Teacher(),
        reflection_minibatch_size=3,
        max_metric_calls=40,
        proposer="textgrad",
    )
    proposals = [t for r in result.trace for t in r["tasks"] if "after" in t]
    assert proposals
    assert calls["optimizer"] == len(proposals)
    assert calls["backward"] == 3 * len(proposals)
    assert all(c["system_prompt"].startswith("prompt#") for c in result.candidates)


# --- the command line -----------------------------------------------------------------------


def test_cli_optimize_with_gepa_reports_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`asynctg optimize --optimizer gepa --sim` runs, writes the tree and front to its report,
    and --resume with a larger --max-metric-calls continues the same search."""
    from asynctg.cli import main

    base = [
        "optimize", "--sim", "--optimizer", "gepa", "--parallel-proposals", "2",
        "--train-size", "8", "--val-size", "4", "--test-size", "4", "--json", "--quiet",
        "--checkpoint", str(tmp_path / "ck"), "--report", str(tmp_path / "rep"),
    ]  # fmt: skip
    assert main([*base, "--max-metric-calls", "30"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["gepa"]["metric_calls"] >= 30
    assert [row["step"] for row in first["history"]] == list(range(len(first["history"])))
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "GEPA candidate tree" in page and "Pareto front per iteration" in page
    assert main([*base, "--max-metric-calls", "60", "--resume"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["gepa"]["metric_calls"] >= 60

    def steps(rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
        return [(r["step"], r["prompt"]) for r in rows]

    n = len(first["history"])
    assert len(second["history"]) > n
    assert steps(second["history"][:n]) == steps(first["history"])


def test_gepa_evaluator_with_task_lm_is_used_as_is() -> None:
    """A gepa Evaluator (returning EvaluationResult) scores the default adapter's answers."""
    from gepa.adapters.default_adapter.default_adapter import EvaluationResult

    def strict(example: dict[str, Any], reply: str) -> Any:
        good = reply.endswith(f"A{example['answer'][1:]}.")
        return EvaluationResult(score=1.0 if good else 0.0, feedback="ok" if good else "bad")

    kw: dict[str, Any] = dict(
        seed_candidate={"system_prompt": "prompt#0"},
        trainset=_data(8),
        valset=_data(5, 100),
        task_lm=task_lm,
        reflection_lm=reflection_lm,
        max_metric_calls=80,
        evaluator=strict,
    )
    _same(ag.optimize(**kw), _gepa(1, **kw))
