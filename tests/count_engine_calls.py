"""Run a TextGrad script counting every engine call it makes, by kind, cache hit or not.

    python tests/count_engine_calls.py textgrad|asynctg.compat COUNTS.json SCRIPT ARGS

Both libraries answer a repeated call from a cache, so the requests a server sees depend on
which calls repeat, which depends on the replies. Counted here instead is what the script asks
for: under TextGrad every ``ChatOpenAI.generate`` call, under compat (``python -m
asynctg.compat``) every ``ChatEngine.send``, the one door every forward, feedback, optimizer
and judge call goes through before the cache is consulted. Kinds are told apart by the tag
protocol (``<IMPROVED_VARIABLE>``: optimizer, ``<OBJECTIVE_FUNCTION>``: backward,
``<ACCURACY>``: judge, the rest: forward). The counts go to COUNTS.json at exit.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
from collections import Counter
from typing import Any

counts: Counter[str] = Counter()
_lock = threading.Lock()  # TextGrad's scripts evaluate from a thread pool


def kind(text: str) -> str:
    if "<IMPROVED_VARIABLE>" in text:
        return "optimizer"
    if "<OBJECTIVE_FUNCTION>" in text:
        return "backward"
    if "<ACCURACY>" in text:
        return "judge"
    return "forward"


def count(text: str) -> None:
    with _lock:
        counts[kind(text)] += 1


def main() -> None:
    library, out, script, *args = sys.argv[1:]
    # Registered first, so it runs last: after compat has finished calls still in flight.
    atexit.register(lambda: open(out, "w").write(json.dumps(counts)))
    if library == "textgrad":
        import runpy

        from textgrad.engine.openai import ChatOpenAI

        generate = ChatOpenAI.generate

        def counted(self: Any, content: Any, system_prompt: Any = None, **kwargs: Any) -> Any:
            count(json.dumps([system_prompt or self.system_prompt, content], default=str))
            return generate(self, content, system_prompt=system_prompt, **kwargs)

        ChatOpenAI.generate = counted
        sys.argv = [script, *args]
        runpy.run_path(script, run_name="__main__")
    else:
        from asynctg.compat.__main__ import run_script
        from asynctg.engine.client import ChatEngine

        send = ChatEngine.send

        async def counted_send(self: Any, request: Any, **options: Any) -> Any:
            count(json.dumps(request.messages, default=str))
            return await send(self, request, **options)

        ChatEngine.send = counted_send  # type: ignore[method-assign]
        sys.exit(run_script([script, *args]))


if __name__ == "__main__":
    main()
