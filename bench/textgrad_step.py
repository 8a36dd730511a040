"""One prompt-optimization step with TextGrad 0.1.8 exactly as published (run as a subprocess).

    OPENAI_BASE_URL=... python bench/textgrad_step.py --batch-size 32 [--loss string|judge]

Prints one JSON line of timings. The caller sets TEXTGRAD_LOG_DIR and XDG_CACHE_HOME to fresh
temporary folders (TextGrad writes logs on import and caches answers on disk; a cache hit
would not be a measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.questions import SYSTEM_PROMPT, parse_integer_answer, questions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--loss", choices=["string", "judge"], default="string")
    parser.add_argument("--model", default="gpt-4o")
    args = parser.parse_args()

    t_import = time.perf_counter()
    import textgrad as tg

    import_s = time.perf_counter() - t_import
    engine = tg.get_engine(args.model)
    tg.set_backward_engine(engine, override=True)
    system_prompt = tg.Variable(
        SYSTEM_PROMPT, requires_grad=True, role_description="system prompt to the language model"
    )
    model = tg.BlackboxLLM(engine, system_prompt)
    optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])

    def exact(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> int:
        return int(
            parse_integer_answer(str(prediction.value))
            == parse_integer_answer(str(ground_truth_answer.value))
        )

    string_loss = tg.autograd.StringBasedFunction(exact, function_purpose="checks the answer")
    judge = tg.TextLoss(
        "Evaluate whether the reasoning and final answer are correct; be critical and concise.",
        engine=engine,
    )
    t0 = time.perf_counter()
    losses = []
    for q, a in questions(args.batch_size):
        x = tg.Variable(q, requires_grad=False, role_description="query to the language model")
        y = tg.Variable(a, requires_grad=False, role_description="correct answer for the query")
        response = model(x)
        if args.loss == "string":
            losses.append(string_loss(inputs=dict(prediction=response, ground_truth_answer=y)))
        else:
            losses.append(judge(response))
    total = tg.sum(losses)
    t1 = time.perf_counter()
    total.backward()
    t2 = time.perf_counter()
    optimizer.step()
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "forward_s": t1 - t0,
                "backward_s": t2 - t1,
                "optimizer_s": t3 - t2,
                "step_s": t3 - t0,
                "import_s": import_s,
                "new_prompt_chars": len(system_prompt.value),
            }
        )
    )


if __name__ == "__main__":
    main()
