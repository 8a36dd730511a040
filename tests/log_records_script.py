"""A tiny forward, backward and step in TextGrad 0.1.8's API; prints the ``textgrad`` records.

    python tests/log_records_script.py textgrad|asynctg.compat

Prints one JSON line: each record the ``textgrad`` logger received, as ``[message, sorted extra
keys, extra]``. The graph exercises every record kind a compat-supported forward, backward
and step writes: LLM calls (``BlackboxLLM``, ``TextLoss``, ``FormattedLLMCall``) and their
feedback in both of TextGrad's branches (the loss itself; a call further up the chain), a
string function in both branches, ``tg.sum``, and two optimizer steps.
Run with cwd in a scratch folder (importing TextGrad writes ./logs and a disk cache).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # TextGrad: no price download

tg: Any = importlib.import_module(sys.argv[1])

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
records: list[list[Any]] = []


class _Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        extra = {k: str(v) for k, v in vars(record).items() if k not in _STANDARD}
        records.append([record.getMessage(), sorted(extra), extra])


logger = logging.getLogger("textgrad")
logger.addHandler(_Collect())
logger.setLevel(logging.INFO)


def contains(prediction: Any, ground_truth_answer: Any) -> str:
    return str(int(str(ground_truth_answer.value) in str(prediction.value)))


engine = tg.get_engine("gpt-4o")
tg.set_backward_engine(engine, override=True)
system_prompt = tg.Variable(
    "Answer briefly.", requires_grad=True, role_description="system prompt to the language model"
)
model = tg.BlackboxLLM(engine, system_prompt)
check = tg.autograd.StringBasedFunction(contains, function_purpose="checks the answer")
judge = tg.TextLoss("Say whether the check passed.", engine=engine)
optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])


def question(text: str) -> Any:
    return tg.Variable(text, requires_grad=False, role_description="query to the language model")


answer_role = tg.Variable("4", requires_grad=False, role_description="correct answer")

# Step 1: a batch of two, each answer checked by a function, each check judged by an LLM.
judged = []
for text in ("How many legs has a cat?", "How many legs has a dog?"):
    score = check(inputs=dict(prediction=model(question(text)), ground_truth_answer=answer_role))
    judged.append(judge(score))
tg.sum(judged).backward()
optimizer.step()
optimizer.zero_grad()

# Step 2: the function's output is the loss itself; the input is a formatted call.
formatted = tg.autograd.FormattedLLMCall(
    engine, "Q: {q}\nHint: {h}", fields={"q": None, "h": None}, system_prompt=system_prompt
)
hint = tg.Variable("count them", requires_grad=False, role_description="hint")
reply = formatted(inputs={"q": question("How many legs has a bird?"), "h": hint})
check(inputs=dict(prediction=reply, ground_truth_answer=answer_role)).backward()
optimizer.step()

print(json.dumps(records))
