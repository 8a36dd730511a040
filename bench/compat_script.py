"""A TextGrad prompt-optimization script, run unchanged under TextGrad or asynctg.compat.

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 \\
        python bench/compat_script.py --module textgrad --batch-size 8 --steps 1
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 \\
        python bench/compat_script.py --module asynctg.compat --batch-size 8 --steps 1

It follows the pattern of TextGrad's evaluation/prompt_optimization.py on BIG-Bench Hard object
counting: a trainable system prompt, a string-match loss, ``tg.sum`` over a batch,
``backward()``, ``optimizer.step()``, and a validation split scored from a thread pool. The only
line that differs between the two libraries is the import, which
``tg = importlib.import_module(args.module)`` stands in for (``import textgrad as tg`` or
``import asynctg.compat as tg``), with the ``tasks`` submodule imported next to it as TextGrad's
script does (``from textgrad.tasks import ...``); everything after them is TextGrad 0.1.8's API.

The data is BBH's object_counting.json (``--data``), split 50/100/rest into train, validation
and test as in the paper (``--train-size`` moves the first cut, for batches above 50).
``--loss judge`` swaps the string-match loss for an LLM judge (``tg.TextLoss``), the paper's
other loss for this step. Prints one JSON line: the phase timings in seconds (``forward``,
``backward``, ``step``, summed over steps; ``eval``; ``total``), per-step timings, validation
accuracy before and after, the system prompt before and after, and the process's peak resident
set size.

TextGrad writes log files when imported and caches answers on disk (a cache hit is not a
measurement), so unless told otherwise this script points ``TEXTGRAD_LOG_DIR`` and
``XDG_CACHE_HOME`` at a fresh temporary folder before the import.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

#: BBH object counting, shipped with the tests (``tests/data/bbh``, MIT).
DEFAULT_DATA = (
    Path(__file__).resolve().parents[1] / "tests" / "data" / "bbh" / "object_counting.json"
)

STARTING_SYSTEM_PROMPT = (
    "Answer the reasoning question below. Work through it step by step, and end with a last "
    "line of the form 'Answer: $VALUE', where VALUE is a number."
)
SYSTEM_PROMPT_ROLE = (
    "system prompt to a language model that answers counting questions; it states how the "
    "model should reason and how it must format its final answer"
)
JUDGE_INSTRUCTION = (
    "Evaluate whether the reasoning and the final answer are correct; be critical and concise."
)
LOSS_PURPOSE = (
    "a Python check that compares the final number of the prediction with the ground-truth "
    "answer: 1 when they match, 0 otherwise"
)

_INTEGER = re.compile(r"\d+")


def parse_integer_answer(text: str) -> int:
    """The last whole number in ``text`` (the model ends with ``Answer: N``); 0 if there is none."""
    found = _INTEGER.findall(text)
    return int(found[-1]) if found else 0


def string_based_equality_fn(prediction: Any, ground_truth_answer: Any) -> int:
    """1 when the prediction's final number equals the ground truth's, else 0."""
    predicted = parse_integer_answer(str(prediction.value))
    return int(predicted == parse_integer_answer(str(ground_truth_answer.value)))


def load_splits(path: Path, train_size: int = 50) -> tuple[list[tuple[str, str]], ...]:
    """(train, validation, test) as (question, answer) pairs: the paper's 50/100/rest split."""
    examples = json.loads(path.read_text())["examples"]
    pairs = [(ex["input"], ex["target"]) for ex in examples]
    val_end = train_size + 100
    return pairs[:train_size], pairs[train_size:val_end], pairs[val_end:]


def _contain_textgrad_side_effects() -> None:
    # Set before the import: TextGrad reads them at import time and on engine creation.
    scratch = tempfile.mkdtemp(prefix="compat-script-")
    os.environ.setdefault("TEXTGRAD_LOG_DIR", os.path.join(scratch, "logs"))
    os.environ.setdefault("XDG_CACHE_HOME", os.path.join(scratch, "cache"))
    # litellm (imported by TextGrad) fetches a price list from the network unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # TextGrad's OpenAI engine insists on a key; a simulator needs none.
    os.environ.setdefault("OPENAI_API_KEY", "sk-no-key-needed")


def peak_rss_kib() -> int | None:
    """This process's peak resident set size (Linux ``VmHWM``), or None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--module", default="asynctg.compat", help="textgrad or asynctg.compat")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--val-size", type=int, default=16, help="validation items (0: none)")
    parser.add_argument("--train-size", type=int, default=50, help="training items (paper: 50)")
    parser.add_argument("--loss", choices=["string", "judge"], default="string")
    parser.add_argument("--workers", type=int, default=8, help="evaluation threads")
    parser.add_argument("--model", default="gpt-4o", help="TextGrad routes 'gpt-4*' to OpenAI")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-shuffle", action="store_true", help="train batches in file order")
    args = parser.parse_args(argv)

    _contain_textgrad_side_effects()
    random.seed(args.seed)
    try:  # TextGrad's DataLoader shuffles with numpy's global generator
        import numpy

        numpy.random.seed(args.seed)
    except ImportError:
        pass

    # ---- from here on: a TextGrad 0.1.8 script; these lines stand in for its import lines ----
    tg = importlib.import_module(args.module)  # import textgrad as tg
    importlib.import_module(f"{args.module}.tasks")  # from textgrad.tasks import ... (tg.tasks)

    def eval_sample(item: tuple[str, str], eval_fn: Any, model: Any) -> int:
        x, y = item
        x = tg.Variable(x, requires_grad=False, role_description="query to the language model")
        y = tg.Variable(y, requires_grad=False, role_description="the correct answer to the query")
        response = model(x)
        eval_output_variable = eval_fn(inputs=dict(prediction=response, ground_truth_answer=y))
        return int(eval_output_variable.value)

    def eval_dataset(test_set: list[tuple[str, str]], eval_fn: Any, model: Any) -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as executor:
            futures = [executor.submit(eval_sample, item, eval_fn, model) for item in test_set]
            return [f.result() for f in concurrent.futures.as_completed(futures)]

    train_set, val_set, _test_set = load_splits(args.data, args.train_size)
    val_set = val_set[: args.val_size]
    if args.steps > 0 and not train_set:
        parser.error(f"{args.data} has no training examples")

    engine = tg.get_engine(engine_name=args.model)
    tg.set_backward_engine(engine, override=True)
    eval_fn = tg.autograd.StringBasedFunction(
        string_based_equality_fn, function_purpose=LOSS_PURPOSE
    )
    train_loader = tg.tasks.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=not args.no_shuffle
    )
    judge_fn = tg.TextLoss(JUDGE_INSTRUCTION, engine=engine) if args.loss == "judge" else None
    system_prompt = tg.Variable(
        STARTING_SYSTEM_PROMPT, requires_grad=True, role_description=SYSTEM_PROMPT_ROLE
    )
    model = tg.BlackboxLLM(engine, system_prompt)
    optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])

    started = time.perf_counter()
    timings = {"forward": 0.0, "backward": 0.0, "step": 0.0, "eval": 0.0}
    per_step: list[dict[str, float]] = []
    accuracy: dict[str, float | None] = {"before": None, "after": None}

    if val_set:
        t = time.perf_counter()
        accuracy["before"] = sum(eval_dataset(val_set, eval_fn, model)) / len(val_set)
        timings["eval"] += time.perf_counter() - t

    steps = 0
    while steps < args.steps:
        for batch_x, batch_y in train_loader:
            if steps >= args.steps:
                break
            optimizer.zero_grad()
            t0 = time.perf_counter()
            losses = []
            for x, y in zip(batch_x, batch_y, strict=True):
                x = tg.Variable(
                    x, requires_grad=False, role_description="query to the language model"
                )
                y = tg.Variable(
                    y, requires_grad=False, role_description="the correct answer to the query"
                )
                response = model(x)
                if judge_fn is not None:
                    losses.append(judge_fn(response))
                else:
                    losses.append(eval_fn(inputs=dict(prediction=response, ground_truth_answer=y)))
            t1 = time.perf_counter()
            total_loss = tg.sum(losses)
            total_loss.backward()
            t2 = time.perf_counter()
            optimizer.step()
            t3 = time.perf_counter()
            row = {"forward": t1 - t0, "backward": t2 - t1, "step": t3 - t2}
            for key, value in row.items():
                timings[key] += value
            per_step.append({k: round(v, 4) for k, v in {**row, "total": t3 - t0}.items()})
            steps += 1

    if val_set:
        t = time.perf_counter()
        accuracy["after"] = sum(eval_dataset(val_set, eval_fn, model)) / len(val_set)
        timings["eval"] += time.perf_counter() - t
    # ---- end of the TextGrad script ----

    result: dict[str, Any] = {
        "module": args.module,
        "batch_size": args.batch_size,
        "loss": args.loss,
        "steps": steps,
        "val_size": len(val_set),
        **{k: round(v, 4) for k, v in timings.items()},
        "train": round(timings["forward"] + timings["backward"] + timings["step"], 4),
        "total": round(time.perf_counter() - started, 4),
        "per_step": per_step,
        "val_accuracy": accuracy,
        "initial_prompt": STARTING_SYSTEM_PROMPT,
        "final_prompt": str(system_prompt.value),
        "peak_rss_kib": peak_rss_kib(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
