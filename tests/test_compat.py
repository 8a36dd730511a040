"""asynctg.compat: TextGrad 0.1.8's blocking API over the async runtime.

Most tests are plain synchronous functions, as a TextGrad script is. They talk HTTP to the
simulator, run as ``python -m asynctg sim`` in a subprocess with 100 ms of latency. Concurrency
claims (a backward pass fans out) are counted, not timed: a gating transport sends requests in
rounds, and a round fills only if its calls are in flight together (timing is in bench/).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import SimProcess, request_kind

import asynctg
import asynctg.compat as tg
from asynctg import runtime
from asynctg.compat import _loop
from asynctg.transport import AiohttpTransport, HTTPRequest, HTTPResponse

LATENCY = 0.1  # seconds; the simulator's fixed latency for this module
QUESTIONS = [
    ("I have a piano, two cats, and a car. How many animals do I have?", "2"),
    ("I have a flute, three violins, and a drum. How many musical instruments do I have?", "5"),
    ("I have an apple, two bananas, and a carrot. How many fruits do I have?", "3"),
    ("I have a chair, a table, and two lamps. How many objects do I have?", "4"),
    ("I have a goat, a frog, and four snails. How many animals do I have?", "6"),
    ("I have a peach, a plum, and a cabbage. How many fruits do I have?", "2"),
    ("I have two drums and a trumpet. How many musical instruments do I have?", "3"),
    ("I have a bed, a car, and an oven. How many objects do I have?", "3"),
]
STARTING_PROMPT = (
    "Answer the reasoning question. Think it through step by step; the last line of your "
    "reply must read 'Answer: $VALUE' where VALUE is a number."
)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    server = SimProcess("--latency", f"{int(LATENCY * 1000)}ms", "--record")
    try:
        yield server
    finally:
        tg.shutdown()  # closes every engine's session on the compat loop, then stops it
        server.close()


@pytest.fixture(scope="module")
def engine(sim: SimProcess) -> tg.Engine:
    return tg.get_engine("gpt-4o", base_url=sim.base_url, api_key="sk-test", cache=False)


@pytest.fixture(autouse=True)
def _fresh(sim: SimProcess) -> Iterator[None]:
    sim.reset()
    yield
    # set_backward_engine is process-wide, as in TextGrad: leave no engine behind
    runtime._backward_engine.set(None)
    runtime._global_backward_engine = None


class Gate:
    """The HTTP transport, holding requests back while ``size`` is set (0: send at once).

    A request waits until ``size`` requests wait; then that round is sent together. A round
    that fills proves its calls were in flight at once, however slow the machine. One that does
    not fill within ``patience`` seconds is sent anyway and counted in ``stalled``, so a test
    fails instead of hanging. With ``size = math.inf`` requests wait until they are cancelled.
    Everything but ``size`` is touched only on the compat loop.
    """

    def __init__(self, patience: float = 15.0) -> None:
        self.http = AiohttpTransport()
        self.size: float = 0
        self.patience = patience
        self.waiting: list[asyncio.Future[None]] = []
        self.rounds: list[int] = []  # requests sent in each round
        self.stalled = 0
        self.cancelled = 0

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        if self.size:
            await self._wait_for_round()
        return await self.http.send(request)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _wait_for_round(self) -> None:
        loop = asyncio.get_running_loop()
        go: asyncio.Future[None] = loop.create_future()
        self.waiting.append(go)
        if len(self.waiting) >= self.size:
            self._send_round()
            return
        timer = loop.call_later(self.patience, self._give_up, go)
        try:
            await go
        except asyncio.CancelledError:
            self.cancelled += 1
            if go in self.waiting:
                self.waiting.remove(go)
            raise
        finally:
            timer.cancel()

    def _give_up(self, go: asyncio.Future[None]) -> None:
        if not go.done():
            self.stalled += 1
            self._send_round()

    def _send_round(self) -> None:
        batch, self.waiting = self.waiting, []
        self.rounds.append(len(batch))
        for go in batch:
            go.set_result(None)


@pytest.fixture
def gated(sim: SimProcess) -> Iterator[tuple[tg.Engine, Gate]]:
    """A compat engine whose requests go through a Gate (open until a test sets its size)."""
    gate = Gate()
    native = asynctg.get_engine("gpt-4o", base_url=sim.base_url, api_key="sk-test", transport=gate)
    engine = tg.Engine(native)
    yield engine, gate
    engine.close()


def string_based_equality_fn(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> int:
    """1 when the last number in the prediction is the ground truth, else 0."""
    numbers = [w.strip(".") for w in str(prediction.value).split() if w.strip(".").isdigit()]
    return int(bool(numbers) and numbers[-1] == str(ground_truth_answer.value))


def _loss_fn() -> tg.autograd.StringBasedFunction:
    return tg.autograd.StringBasedFunction(
        string_based_equality_fn, function_purpose="checks whether the final answer is correct"
    )


def _forward_batch(
    model: tg.BlackboxLLM, eval_fn: Any, batch: list[tuple[str, str]], threads: int = 1
) -> list[tg.Variable]:
    """Each sample's loss, computed the way TextGrad's scripts do (optionally from a pool)."""

    def one(item: tuple[str, str]) -> tg.Variable:
        x = tg.Variable(
            item[0], requires_grad=False, role_description="query to the language model"
        )
        y = tg.Variable(item[1], requires_grad=False, role_description="correct answer")
        response = model(x)
        loss: tg.Variable = eval_fn(inputs=dict(prediction=response, ground_truth_answer=y))
        return loss

    if threads == 1:
        return [one(item) for item in batch]
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, batch))


# --- the script pattern -----------------------------------------------------------------------


def test_prompt_optimization_script_runs_unchanged(sim: SimProcess, engine: tg.Engine) -> None:
    """TextGrad's prompt-optimization loop runs as written: 3B+1 calls, feedback, a new prompt."""
    batch_size = 4
    tg.set_backward_engine(engine, override=True)
    train_loader = tg.tasks.DataLoader(QUESTIONS[:batch_size], batch_size=batch_size, shuffle=True)
    system_prompt = tg.Variable(
        STARTING_PROMPT,
        requires_grad=True,
        role_description="system prompt to a model that answers counting questions",
    )
    model = tg.BlackboxLLM(engine, system_prompt)
    optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])
    eval_fn = _loss_fn()

    for batch_x, batch_y in train_loader:
        optimizer.zero_grad()
        losses = []
        for x, y in zip(batch_x, batch_y, strict=True):
            x = tg.Variable(x, requires_grad=False, role_description="query to the language model")
            y = tg.Variable(y, requires_grad=False, role_description="correct answer")
            response = model(x)
            eval_output_variable = eval_fn(inputs=dict(prediction=response, ground_truth_answer=y))
            assert eval_output_variable.value in ("0", "1")
            losses.append(eval_output_variable)
        total_loss = tg.sum(losses)
        total_loss.backward()
        assert len(list(system_prompt.gradients)) == batch_size
        assert all(isinstance(g.value, str) and g.value for g in system_prompt.gradients)
        assert system_prompt.get_gradient_text()
        assert all(system_prompt.gradients_context[g] for g in system_prompt.gradients)
        optimizer.step()

    assert system_prompt.value != STARTING_PROMPT
    assert str(system_prompt.value).startswith(STARTING_PROMPT)  # the simulator appends a tip
    kinds = [request_kind(r) for r in sim.requests()]
    assert len(kinds) == 3 * batch_size + 1
    assert kinds.count("backward") == 2 * batch_size
    assert kinds.count("optimizer") == 1
    optimizer.zero_grad()
    assert list(system_prompt.gradients) == []


def test_outputs_are_compat_variables_with_textgrad_accessors(engine: tg.Engine) -> None:
    """Compat calls return compat Variables; TextGrad's positional order and ints are accepted."""
    question = tg.Variable(
        QUESTIONS[0][0], "", None, False, role_description="query to the language model"
    )
    answer = tg.Variable(2, requires_grad=False, role_description="correct answer")
    assert answer.value == "2"
    assert isinstance(answer, asynctg.Variable)
    model = tg.BlackboxLLM(engine, "You count things. End with 'Answer: $VALUE'.")
    response = model(question)
    # The call returns before its reply is in; reading the result waits for it, and the
    # variable is then a plain compat Variable, in place.
    assert isinstance(response, tg.Variable)
    assert set(response.predecessors) == {model.system_prompt, question}
    assert type(response) is tg.Variable
    loss = _loss_fn()(inputs=dict(prediction=response, ground_truth_answer=answer))
    assert type(loss) is tg.Variable
    assert loss.grad_fn is not None
    function = loss.grad_fn.function
    assert isinstance(function, tg.autograd.StringBasedFunction)
    assert function.fn is string_based_equality_fn  # grad_fn names the user's function
    total = loss + loss
    assert type(total) is tg.Variable
    joined = tg.Variable(
        "x", predecessors={question}, requires_grad=False, role_description="derived text"
    )
    assert joined.predecessors == (question,)


def test_losses_and_formatted_calls_block_and_return_variables(engine: tg.Engine) -> None:
    """tg.TextLoss, tg.loss.MultiFieldTokenParsedEvaluation and FormattedLLMCall return
    variables whose values are there when read."""
    response = tg.Variable("Answer: 4", requires_grad=True, role_description="answer to check")
    evaluation = tg.TextLoss("Evaluate the answer; be critical.", engine=engine)(response)
    assert evaluation.value and type(evaluation) is tg.Variable

    judge = tg.loss.MultiFieldTokenParsedEvaluation(
        "Is the prediction the ground truth? Reply within <ACCURACY> </ACCURACY> tags.",
        role_descriptions=["Question", "Ground truth", "Prediction"],
        engine=engine,
        parse_tags=["<ACCURACY>", "</ACCURACY>"],
    )
    q = tg.Variable("How many?", requires_grad=False, role_description="question")
    truth = tg.Variable("4", requires_grad=False, role_description="ground truth")
    verdict = judge([q, truth, response])
    assert judge.parse_output(verdict) in ("0", "1")

    call = tg.autograd.FormattedLLMCall(engine, "Q: {q}\nA: {a}", fields={"q": None, "a": None})
    out = call(inputs={"q": q, "a": response})
    assert out.value.strip() and type(out) is tg.Variable

    tg.set_backward_engine(engine, override=True)
    evaluation.backward()
    assert response.gradients


def test_engine_generate_and_call_block(sim: SimProcess, engine: tg.Engine) -> None:
    """engine.generate(prompt, system_prompt=...) and engine(prompt, ...) return the reply text."""
    first = engine.generate("Tell me about blue whales.", system_prompt="Be brief.")
    second = engine("Tell me about red pandas.", system_prompt="Be briefer.")
    assert "blue whales" in first and "red pandas" in second
    assert engine.model_string == "gpt-4o"
    sent = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in sim.requests()]
    assert sent == [
        ("Be brief.", "Tell me about blue whales."),
        ("Be briefer.", "Tell me about red pandas."),
    ]


def test_set_backward_engine_needs_override(engine: tg.Engine, sim: SimProcess) -> None:
    """Replacing the backward engine needs override=True, as in TextGrad."""
    tg.set_backward_engine(engine)
    other = tg.get_engine("gpt-4o-mini", base_url=sim.base_url)
    with pytest.raises(asynctg.ConfigError, match="override=True"):
        tg.set_backward_engine(other)
    tg.set_backward_engine(other, override=True)
    assert runtime.get_backward_engine() is other.native


def test_backward_engine_set_in_one_thread_is_seen_by_every_thread(sim: SimProcess) -> None:
    """TextGrad's setting is one per process: a worker thread's override reaches all threads."""
    first = tg.get_engine("gpt-4o", base_url=sim.base_url, api_key="sk-test")
    second = tg.get_engine("gpt-4o-mini", base_url=sim.base_url, api_key="sk-test")
    tg.set_backward_engine(first)
    worker = threading.Thread(
        target=tg.set_backward_engine, args=(second,), kwargs={"override": True}
    )
    worker.start()
    worker.join()
    assert runtime.get_backward_engine() is second.native
    assert _loop.run(_current_backward_engine()) is second.native  # and on the compat loop


async def _current_backward_engine() -> asynctg.ChatEngine:
    return runtime.get_backward_engine()


def test_one_engine_across_event_loops_leaks_no_session(sim: SimProcess) -> None:
    """An engine used from two asyncio.run calls, then the compat loop, closes each old session."""
    import gc
    import warnings

    native = asynctg.get_engine("gpt-4o", base_url=sim.base_url, api_key="sk-test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):  # the first loop has ended when the second call opens its session
            asyncio.run(native.generate("hello"))
        tg.Engine(native).generate("hello")  # the compat loop: a third loop, still running
        asyncio.run(native.generate("hello"))  # back to a new loop; the compat one is running
        asyncio.run(native.aclose())
        gc.collect()
    assert sim.stats()["requests"] >= 1


# --- concurrency ------------------------------------------------------------------------------


def test_blocking_calls_from_16_threads_at_once(
    sim: SimProcess, gated: tuple[tg.Engine, Gate]
) -> None:
    """16 threads calling model(x), eval_fn(...) and engine(...) at once each get their answer;
    their 32 calls go in two rounds of 16 in flight together, not one after another."""
    engine, gate = gated
    gate.size = 16
    model = tg.BlackboxLLM(engine, STARTING_PROMPT)
    eval_fn = _loss_fn()
    barrier = threading.Barrier(16)

    def work(i: int) -> tuple[str, str, str]:
        question, truth = QUESTIONS[i % len(QUESTIONS)]
        barrier.wait()  # all 16 call in together
        # distinct prompts: identical concurrent requests would be coalesced into one call
        x = tg.Variable(f"Case {i}. {question}", requires_grad=False, role_description="query")
        y = tg.Variable(truth, requires_grad=False, role_description="correct answer")
        response = model(x)
        loss = eval_fn(inputs=dict(prediction=response, ground_truth_answer=y))
        reply = engine(f"Describe thread number {i} please.")
        return str(response.value), str(loss.value), reply

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(work, range(16)))

    for i, (response, loss, reply) in enumerate(results):
        assert "Answer:" in response
        assert loss in ("0", "1")
        assert f"thread number {i} " in reply  # no answer went to the wrong thread
    assert sim.stats()["ok"] == 32
    assert (gate.rounds, gate.stalled) == ([16, 16], 0)  # 16 in flight together, twice


def test_backward_of_a_batch_of_8_takes_two_latencies(
    sim: SimProcess, gated: tuple[tg.Engine, Gate]
) -> None:
    """B=8: the 16 feedback calls go as two levels of 8 in flight together (2 rounds, so about
    2 x latency; one at a time would be 16)."""
    engine, gate = gated
    tg.set_backward_engine(engine, override=True)
    system_prompt = tg.Variable(STARTING_PROMPT, requires_grad=True, role_description="prompt")
    model = tg.BlackboxLLM(engine, system_prompt)
    losses = _forward_batch(model, _loss_fn(), QUESTIONS, threads=8)
    total_loss = tg.sum(losses)
    assert str(total_loss)  # reading it waits for the forward calls, still running until now
    sim.reset()
    gate.size = 8

    total_loss.backward()

    assert sim.stats()["ok"] == 16
    assert (gate.rounds, gate.stalled) == ([8, 8], 0)  # a level at a time, all of it at once
    assert len(system_prompt.gradients) == 8


def test_a_plain_forward_loop_runs_its_calls_together(
    sim: SimProcess, gated: tuple[tg.Engine, Gate]
) -> None:
    """The script's one-sample-at-a-time forward loop returns without waiting for a reply; its
    8 calls are in flight together (one round of 8)."""
    engine, gate = gated
    system_prompt = tg.Variable(STARTING_PROMPT, requires_grad=True, role_description="prompt")
    model = tg.BlackboxLLM(engine, system_prompt)
    gate.size = 8  # no reply comes before all 8 calls are made: a loop that waited would stall
    losses = _forward_batch(model, _loss_fn(), QUESTIONS)  # a plain loop, no threads
    values = [loss.value for loss in losses]  # reading waits for the replies
    assert set(values) <= {"0", "1"}
    assert sim.stats()["ok"] == 8
    assert (gate.rounds, gate.stalled) == ([8], 0)


def test_a_failed_deferred_call_raises_where_its_result_is_read(sim: SimProcess) -> None:
    """A provider error in a deferred call is raised on reading, typed; dependants raise it too."""
    from asynctg.engine import RetryPolicy

    # Nothing listens on port 9 of loopback (discard): a connection error, not retried.
    broken = tg.get_engine(
        "gpt-4o", base_url="http://127.0.0.1:9/v1", api_key="sk", retry=RetryPolicy(max_attempts=1)
    )
    model = tg.BlackboxLLM(broken, "You count things.")
    x = tg.Variable("How many?", requires_grad=False, role_description="question")
    y = tg.Variable("2", requires_grad=False, role_description="correct answer")
    response = model(x)  # returns at once; the call fails in the background
    loss = _loss_fn()(inputs=dict(prediction=response, ground_truth_answer=y))
    with pytest.raises(asynctg.APIConnectionError):
        _ = response.value
    with pytest.raises(asynctg.APIConnectionError):
        loss.backward(broken)
    assert repr(response)  # never blocks, even on a failed call
    assert sim.stats()["requests"] == 0


def test_bad_arguments_still_raise_at_the_call(engine: tg.Engine) -> None:
    """Deferring a call does not defer argument errors: TextGrad raises at the call, so do we."""
    model = tg.BlackboxLLM(engine, "You count things.")
    with pytest.raises(asynctg.ConfigError, match=r"tg\.Variable"):
        model("a plain string")  # type: ignore[arg-type]
    call = tg.autograd.FormattedLLMCall(engine, "Q: {q}", fields=["q"])
    with pytest.raises(asynctg.ConfigError, match="missing"):
        call(inputs={"question": tg.Variable("x", requires_grad=False, role_description="q")})


def test_step_updates_all_parameters_concurrently(
    sim: SimProcess, gated: tuple[tg.Engine, Gate]
) -> None:
    """optimizer.step() with 4 parameters makes its 4 calls at once (one round of 4, so about
    1 x latency, not 4 x)."""
    engine, gate = gated
    tg.set_backward_engine(engine, override=True)
    prompts = [
        tg.Variable(
            f"{STARTING_PROMPT} (variant {i})", requires_grad=True, role_description="prompt"
        )
        for i in range(4)
    ]
    losses = []
    for i, prompt in enumerate(prompts):
        losses += _forward_batch(
            tg.BlackboxLLM(engine, prompt), _loss_fn(), QUESTIONS[2 * i : 2 * i + 2]
        )
    tg.sum(losses).backward()
    optimizer = tg.TGD(engine=engine, parameters=prompts)
    sim.reset()
    gate.size = 4

    optimizer.step()

    assert sim.stats()["ok"] == 4
    assert (gate.rounds, gate.stalled) == ([4], 0)
    assert all(p.value != f"{STARTING_PROMPT} (variant {i})" for i, p in enumerate(prompts))


# --- errors -----------------------------------------------------------------------------------


async def test_blocking_calls_work_inside_a_running_loop(
    sim: SimProcess, engine: tg.Engine
) -> None:
    """In a thread running its own loop (a Jupyter cell, `async def`), blocking calls work as
    TextGrad's do: that loop waits while the compat loop does the work."""
    prompt = tg.Variable(STARTING_PROMPT, requires_grad=True, role_description="prompt")
    model = tg.BlackboxLLM(engine, prompt)
    x = tg.Variable("How many?", requires_grad=False, role_description="query")
    response = model(x)
    assert str(response.value).startswith("Simulated") or response.value
    assert engine.generate("hi")
    loss = tg.TextLoss("Evaluate.", engine=engine)(response)
    loss.backward(engine)
    tg.TGD(engine=engine, parameters=[prompt]).step()
    assert prompt.value != STARTING_PROMPT
    assert sim.stats()["requests"] >= 5


def test_a_blocking_call_on_the_compat_loop_itself_raises_instead_of_deadlocking(
    engine: tg.Engine,
) -> None:
    """An async function run on the compat loop that calls the blocking API gets ConfigError."""

    async def calls_back(prediction: tg.Variable) -> str:
        return engine.generate("this would wait for the loop it is running on")

    check = tg.autograd.StringBasedFunction(calls_back, function_purpose="misuses the API")
    x = tg.Variable("text", requires_grad=False, role_description="input")
    with pytest.raises(asynctg.ConfigError, match="own thread"):
        check(inputs=dict(prediction=x))


def test_string_functions_over_a_running_call_run_when_it_is_ready(engine: tg.Engine) -> None:
    """Over a pending input, a sync function (in a worker thread) and an async one (on the
    loop) both run once the reply is in, and their outputs differentiate as usual."""
    model = tg.BlackboxLLM(engine, "You count things.")
    x = tg.Variable(QUESTIONS[0][0], requires_grad=False, role_description="question")
    response = model(x)
    seen: list[str] = []

    def sync_len(prediction: tg.Variable) -> int:
        seen.append(threading.current_thread().name)
        return len(str(prediction.value))

    async def async_len(prediction: tg.Variable) -> int:
        return len(str(prediction.value))

    outputs = [
        tg.autograd.StringBasedFunction(fn, function_purpose="measures the reply")(
            inputs=dict(prediction=response)
        )
        for fn in (sync_len, async_len)
    ]
    expected = str(len(response.value))
    assert [out.value for out in outputs] == [expected, expected]
    assert seen and seen[0] not in ("MainThread", "asynctg-compat-loop")
    assert all(out.grad_fn is not None and out.predecessors == (response,) for out in outputs)


def test_exceptions_from_the_loop_propagate_unchanged(sim: SimProcess) -> None:
    """An exception raised on the loop reaches the caller as the same object and type."""
    boom = KeyError("raised on the loop")

    async def fails(prediction: tg.Variable) -> str:
        raise boom

    check = tg.autograd.StringBasedFunction(fails, function_purpose="fails")
    x = tg.Variable("text", requires_grad=False, role_description="input")
    with pytest.raises(KeyError) as caught:
        check(inputs=dict(prediction=x))
    assert caught.value is boom

    missing = tg.get_engine("gpt-4o", base_url=sim.root + "/nowhere/v1", api_key="sk-test")
    with pytest.raises(asynctg.BadRequestError) as error:
        missing.generate("hello")
    assert error.value.status == 404
    missing.close()


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler while the test runs, whatever the test command inherited:
    started with SIGINT ignored (nohup, `cmd &` in a script, some CI runners), a SIGINT would
    otherwise be dropped."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_blocked_cancels_the_work_on_the_loop(
    sim: SimProcess, gated: tuple[tg.Engine, Gate], default_sigint: None
) -> None:
    """KeyboardInterrupt during step() cancels the step on the loop: its request is cancelled
    and nothing changes later."""
    engine, gate = gated
    tg.set_backward_engine(engine, override=True)
    prompt = tg.Variable(STARTING_PROMPT, requires_grad=True, role_description="prompt")
    losses = _forward_batch(tg.BlackboxLLM(engine, prompt), _loss_fn(), QUESTIONS[:1])
    tg.sum(losses).backward()
    optimizer = tg.TGD(engine=engine, parameters=[prompt])
    sim.reset()
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()
    gate.size = math.inf  # the optimizer's request waits at the gate until cancelled

    def interrupt_once_in_flight() -> None:
        # Ctrl-C while the optimizer's request is in flight, aimed at the blocked thread
        give_up = time.monotonic() + gate.patience  # only if the request never comes
        while not gate.waiting:
            if time.monotonic() > give_up:
                return
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGINT)

    killer = threading.Thread(target=interrupt_once_in_flight, daemon=True)
    killer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            optimizer.step()
    finally:
        killer.join(timeout=gate.patience)
    gate.size = 0
    # a call on the same loop after the interrupt: the cancellation has reached the loop by now
    engine.generate("one more call")
    assert (gate.cancelled, gate.waiting, gate.stalled) == (1, [], 0)
    assert prompt.value == STARTING_PROMPT
    assert optimizer.steps == 0
    assert engine.stats()["scheduler"]["in_flight"] == 0
    assert sim.stats()["ok"] == 1  # only the last call reached the simulator


def test_shutdown_stops_the_loop_and_the_next_call_starts_another(engine: tg.Engine) -> None:
    """tg.shutdown() closes sessions and stops the loop thread; the next call starts a new one."""
    engine.generate("before")
    first = _loop.loop()
    tg.shutdown()
    assert first.is_closed()
    assert not any(t.name == "asynctg-compat-loop" for t in threading.enumerate())
    assert engine.generate("after")
    assert _loop.loop() is not first


def test_interpreter_exit_closes_everything_cleanly(sim: SimProcess, tmp_path: Path) -> None:
    """A script that never calls shutdown exits 0 with no unclosed-session or task warnings."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import concurrent.futures
            import asynctg.compat as tg
            engine = tg.get_engine("gpt-4o", base_url={sim.base_url!r})
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                replies = list(pool.map(engine.generate, ["a b", "c d", "e f", "g h"]))
            print(sum(1 for reply in replies if reply))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONASYNCIODEBUG": "1"},
    )
    assert done.returncode == 0, done.stderr
    # asyncio's debug mode also names callbacks slower than 0.1 s: the machine's speed, not a leak
    slow = re.compile(r"Executing <.*> took \d+\.\d+ seconds")
    assert [line for line in done.stderr.splitlines() if not slow.fullmatch(line)] == []
    assert done.stdout.strip() == "4"


# --- DataLoader -------------------------------------------------------------------------------


def test_dataloader_yields_tuples_of_columns_in_batches() -> None:
    """Tuple items come back as (xs, ys) columns, batch_size at a time, the last one short."""
    data = [(f"q{i}", f"a{i}") for i in range(5)]
    batches = list(tg.tasks.DataLoader(data, batch_size=2, shuffle=False))
    assert batches == [
        (("q0", "q1"), ("a0", "a1")),
        (("q2", "q3"), ("a2", "a3")),
        (("q4",), ("a4",)),
    ]
    assert len(tg.tasks.DataLoader(data, batch_size=2)) == 3


def test_dataloader_non_tuple_items_come_back_as_lists() -> None:
    """Items that are not tuples are batched as lists of items."""
    assert list(tg.tasks.DataLoader(["a", "b", "c"], batch_size=2, shuffle=False)) == [
        ["a", "b"],
        ["c"],
    ]


def test_dataloader_reshuffles_on_every_pass_and_covers_each_item_once() -> None:
    """shuffle=True draws a new order from `random` per pass; every item appears exactly once."""
    data = [(i, -i) for i in range(20)]
    random.seed(1)
    loader = tg.tasks.DataLoader(data, batch_size=3)
    passes = [[x for xs, _ in loader for x in xs] for _ in range(2)]
    assert all(sorted(p) == list(range(20)) for p in passes)
    assert passes[0] != passes[1] != list(range(20))
    random.seed(1)
    again = [x for xs, _ in tg.tasks.DataLoader(data, batch_size=3) for x in xs]
    assert again == passes[0]  # reproducible from the global seed, as TextGrad's is from numpy's


def test_dataloader_is_its_own_iterator_and_restarts() -> None:
    """iter() restarts the loader, and it is its own iterator, as in TextGrad."""
    loader = tg.tasks.DataLoader([(1, 2), (3, 4)], batch_size=1, shuffle=False)
    it = iter(loader)
    assert it is loader
    assert next(it) == ((1,), (2,))
    assert list(loader) == [((1,), (2,)), ((3,), (4,))]


def test_dataloader_refuses_a_batch_size_below_one() -> None:
    """batch_size=0, which loops forever in TextGrad, is a ConfigError."""
    with pytest.raises(asynctg.ConfigError, match="batch_size"):
        tg.tasks.DataLoader([1, 2], batch_size=0)


def test_namespaces_match_textgrads() -> None:
    """tg.autograd, tg.loss, tg.tasks and tg.optimizer expose TextGrad's names."""
    assert tg.TGD is tg.TextualGradientDescent is tg.optimizer.TGD
    for name in ("StringBasedFunction", "FormattedLLMCall", "LLMCall", "Module", "sum"):
        assert hasattr(tg.autograd, name)
    for name in (
        "TextLoss",
        "MultiFieldEvaluation",
        "MultiFieldTokenParsedEvaluation",
        "MultiChoiceTestTime",
        "ImageQALoss",
    ):
        assert hasattr(tg.loss, name)
    assert tg.loss.TextLoss is tg.TextLoss
    assert inspect.isclass(tg.optimizer.TextualGradientDescentwithMomentum)
    assert inspect.iscoroutinefunction(asynctg.Variable.backward)
    assert not inspect.iscoroutinefunction(tg.Variable.backward)
