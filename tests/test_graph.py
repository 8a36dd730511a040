"""The graph layer: building graphs, the concurrent backward executor, export, and bad input.

Most tests run the real engine on the in-memory transport; the concurrency tests talk HTTP to
the simulator on loopback through a transport that sends requests in rounds, so a pass's depth
and width are counted, not timed (timing is measured in bench/).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

import msgspec
import pytest
from support import engine_with, error, ok

import asynctg as tg
from asynctg import prompts, runtime
from asynctg.engine.client import ChatEngine
from asynctg.graph import Function, GradientPlan, compute_gradients, post_order
from asynctg.sim import SimConfig, SimServer
from asynctg.transport import AiohttpTransport, HTTPRequest, HTTPResponse, MockTransport

T = TypeVar("T")

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)  # enough for the magic-number check


@pytest.fixture(autouse=True)
def _no_backward_engine() -> Iterator[None]:
    runtime._global_backward_engine = None
    yield
    runtime._global_backward_engine = None


def _clear_backward_engine() -> None:
    """Forget any backward engine, in this context and process-wide."""
    runtime._backward_engine.set(None)
    runtime._global_backward_engine = None


def _text(body: dict[str, Any]) -> str:
    parts = []
    for m in body["messages"]:
        c = m["content"]
        parts.append(c if isinstance(c, str) else "\n".join(p.get("text", "") for p in c))
    return "\n".join(parts)


def answer(request: HTTPRequest) -> HTTPResponse:
    """A deterministic provider: backward requests get feedback, others an answer, by hash."""
    digest = hashlib.sha256(request.body).hexdigest()[:10]
    body = msgspec.json.decode(request.body)
    text = _text(body)
    if "<IMPROVED_VARIABLE>" in text:
        return ok(f"<IMPROVED_VARIABLE>new {digest}</IMPROVED_VARIABLE>")
    if "<OBJECTIVE_FUNCTION>" in text:
        return ok(f"feedback {digest}")
    if body["messages"][0]["content"] == prompts.REDUCE_SYSTEM_PROMPT:
        return ok(f"merged {digest}")
    return ok(f"answer {digest}")


def bodies(transport: MockTransport, start: int = 0) -> list[dict[str, Any]]:
    return [msgspec.json.decode(r.body) for r in transport.requests[start:]]


def trainable(value: str, role: str) -> tg.Variable:
    return tg.Variable(value, requires_grad=True, role_description=role)


def frozen(value: str | bytes, role: str) -> tg.Variable:
    return tg.Variable(value, requires_grad=False, role_description=role)


def _exact(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> str:
    return "1" if prediction.value.strip() == ground_truth_answer.value.strip() else "0"


EXACT = tg.autograd.StringBasedFunction(_exact, function_purpose="checks the answer exactly")


async def _minibatch(
    engine: ChatEngine, n: int, system: str = "Answer with a number."
) -> tuple[tg.Variable, list[tg.Variable], list[tg.Variable]]:
    """A trainable system prompt, ``n`` responses and an exact-match loss on each."""
    sp = trainable(system, "system prompt to the model")
    model = tg.BlackboxLLM(engine, sp)
    xs = [frozen(f"question #{i}: what is {i} + {i}?", "question") for i in range(n)]
    responses = list(await asyncio.gather(*(model(x) for x in xs)))
    losses = list(
        await asyncio.gather(
            *(
                EXACT(inputs=dict(prediction=r, ground_truth_answer=frozen(str(2 * i), "answer")))
                for i, r in enumerate(responses)
            )
        )
    )
    return sp, responses, losses


class Relay(Function):
    """A no-call function for structural tests: each input gets a fixed feedback text."""

    def __call__(self, inputs: list[tg.Variable], role: str) -> tg.Variable:
        return self.attach(tg.Variable("relay", predecessors=inputs, role_description=role))

    def backward(
        self, output: tg.Variable, feedback: str, engine: ChatEngine, **saved: Any
    ) -> list[GradientPlan]:
        return [GradientPlan(p, value="relayed") for p in output.predecessors if p.requires_grad]


class Shuffler:
    """Holds every request until the loop is idle, then answers a random one (seeded).

    Completion order is scrambled deterministically, without sleeping on real time.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.holding = False
        self.pending: list[tuple[asyncio.Future[None], HTTPRequest]] = []
        self.completed: list[bytes] = []
        self.transport = MockTransport(self.handle)

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        if self.holding:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.pending.append((fut, request))
            await fut
            self.completed.append(request.body)
        return answer(request)

    async def drive(self, coro: Coroutine[Any, Any, T]) -> T:
        self.holding = True
        task = asyncio.ensure_future(coro)
        idle = 0
        while not task.done():
            for _ in range(50):
                await asyncio.sleep(0)
            if self.pending:
                idle = 0
                fut, _ = self.pending.pop(self.rng.randrange(len(self.pending)))
                fut.set_result(None)
            else:
                idle += 1
                assert idle < 100, "the pass is stuck with no request in flight"
        self.holding = False
        return task.result()


# --- the executor -----------------------------------------------------------------------------


async def test_chain_ten_thousand_deep_needs_no_recursion() -> None:
    """A 10,000-deep chain is ordered and differentiated iteratively, without RecursionError."""
    leaf = trainable("start", "node 0")
    node = leaf
    relay = Relay()
    for i in range(1, 10_001):
        node = relay([node], f"node {i}")
    order = post_order(node)
    assert len(order) == 10_001 and order[0] is leaf and order[-1] is node
    transport = MockTransport(answer)
    engine = engine_with(transport)
    await node.backward(engine)
    assert [g.value for g in leaf.gradients] == ["relayed"]
    assert transport.requests == []
    assert len(list(node.walk())) == 10_001
    assert node.to_dot().count("->") == 10_000


async def test_post_order_puts_predecessors_first_in_argument_order() -> None:
    """post_order lists each variable once, after its predecessors, visiting them in order."""
    a, b, c = (trainable(v, v) for v in "abc")
    ab = tg.sum([a, b])
    top = tg.sum([ab, c, a])
    assert post_order(top) == [a, b, ab, c, top]


async def test_cycle_is_a_graph_error_naming_the_path() -> None:
    """A graph whose predecessors loop back is a GraphError, not a hang or RecursionError."""
    a = trainable("a", "first")
    b = Relay()([a], "second")
    a.predecessors = (b,)
    with pytest.raises(tg.GraphError, match="cycle") as info:
        await b.backward(engine_with(MockTransport(answer)))
    assert "'second'" in str(info.value) and "'first'" in str(info.value)
    self_loop = trainable("s", "self")
    self_loop.predecessors = (self_loop,)
    with pytest.raises(tg.GraphError, match="cycle"):
        post_order(self_loop)


async def test_frozen_branch_makes_no_calls() -> None:
    """Feedback goes only where gradients are required: a frozen branch costs no call."""
    transport = MockTransport(answer)
    engine = engine_with(transport)
    sp = trainable("Answer.", "system prompt")
    response = await tg.BlackboxLLM(engine, sp)(frozen("q", "question"))
    reference = await tg.BlackboxLLM(engine, frozen("Be exact.", "fixed prompt"))(
        frozen("q", "question")
    )
    reference.requires_grad = False  # freeze the whole reference branch
    judge = tg.autograd.FormattedLLMCall(engine, "{a} vs {b}", fields=["a", "b"])
    loss = await judge(inputs={"a": response, "b": reference})
    start = len(transport.requests)
    await loss.backward(engine)
    sent = bodies(transport, start)
    assert len(sent) == 2  # loss -> response, response -> sp
    spans = [_text(b).split("<VARIABLE>")[-1] for b in sent]
    assert not any(reference.value in s for s in spans)
    assert reference.gradients == []


async def test_output_of_frozen_inputs_gets_feedback_but_passes_none_on() -> None:
    """An LLM output whose inputs are all frozen gets its feedback, and makes no further call."""
    transport = MockTransport(answer)
    engine = engine_with(transport)
    response = await tg.BlackboxLLM(engine, frozen("Be exact.", "fixed"))(frozen("q", "question"))
    loss = await tg.TextLoss("Judge it.", engine=engine)(response)
    start = len(transport.requests)
    await loss.backward(engine)
    assert len(transport.requests) - start == 1
    assert len(response.gradients) == 1


async def _ordered_run(seed: int) -> tuple[list[bytes], list[str], Any, list[bytes]]:
    shuffler = Shuffler(seed)
    engine = engine_with(shuffler.transport)
    sp, responses, losses = await _minibatch(engine, 5)
    shared = await tg.BlackboxLLM(engine, sp)(responses[0])  # a second path to sp
    total = tg.sum([*losses, shared])
    start = len(shuffler.transport.requests)
    await shuffler.drive(total.backward(engine))
    sent = sorted(r.body for r in shuffler.transport.requests[start:])
    grads = [g.value for g in sp.gradients]
    prompt = tg.TGD(engine=engine, parameters=[sp]).update_prompt(sp)
    return sent, grads, prompt, shuffler.completed


async def test_gradient_order_is_deterministic_under_any_completion_order() -> None:
    """The same graph twice, answered in different orders: same requests, gradients, prompt."""
    first = await _ordered_run(seed=1)
    second = await _ordered_run(seed=2)
    assert first[3] != second[3]  # the replies really did arrive in different orders
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert first[2] == second[2]
    assert len(first[1]) == 6  # 5 through the responses, 1 from the shared second call


@pytest.mark.parametrize("seed", [0, 4, 5])
async def test_gradients_are_ordered_by_consumer_position_then_argument(seed: int) -> None:
    """A variable's gradients follow its consumers' topological order, not completion order."""
    shuffler = Shuffler(seed)
    engine = engine_with(shuffler.transport)
    x = trainable("x", "draft")
    a, b, c = [
        await tg.autograd.LLMCall(engine, frozen(f"system {use}", "system"))(x, f"{use} use")
        for use in ("first", "second", "third")
    ]
    root = tg.sum([c, a, b])
    shuffler.completed.clear()
    await shuffler.drive(root.backward(engine))
    contexts = [x.gradients_context[g] for g in x.gradients]
    answered = [
        next(use for use in ("first", "second", "third") if f"system {use}".encode() in body)
        for body in shuffler.completed
    ]
    assert sorted(answered) == ["first", "second", "third"]
    assert answered != ["third", "first", "second"]  # replies arrived out of the final order
    # post-order of the root visits c, a, b (the sum's argument order), not creation order
    assert [ctx["response_desc"] for ctx in contexts if ctx] == [
        "third use",
        "first use",
        "second use",
    ]


async def test_failed_backward_changes_no_gradient() -> None:
    """A non-retryable error in one call fails the pass and leaves every gradient as it was."""
    bad = "question #2"

    def handler(request: HTTPRequest) -> HTTPResponse:
        text = request.body.decode()
        if bad in text and "OBJECTIVE_FUNCTION" in text:
            return error(400, "invalid request")
        return answer(request)

    transport = MockTransport(handler)
    engine = engine_with(transport)
    sp, responses, losses = await _minibatch(engine, 4)
    old = tg.Variable("earlier feedback", requires_grad=False, role_description="feedback")
    sp.gradients = [old]
    sp.gradients_context = {old: None}
    with pytest.raises(tg.BadRequestError):
        await tg.sum(losses).backward(engine)
    assert sp.gradients == [old] and sp.gradients_context == {old: None}
    assert all(v.gradients == [] for v in [*responses, *losses])
    # the level-1 calls all succeeded before the failing level-2 one
    assert sum("OBJECTIVE_FUNCTION" in r.body.decode() for r in transport.requests) >= 5


async def test_backward_without_any_engine_is_a_config_error() -> None:
    """No engine given and none set: ConfigError naming set_backward_engine."""
    _clear_backward_engine()
    engine = engine_with(MockTransport(answer))
    response = await tg.autograd.LLMCall(engine)(trainable("draft", "draft"))
    with pytest.raises(tg.ConfigError, match="set_backward_engine"):
        await response.backward()
    assert response.gradients == []


async def test_set_backward_engine_is_used_when_none_is_given() -> None:
    """After set_backward_engine, backward and step find the engine themselves."""
    transport = MockTransport(answer)
    engine = engine_with(transport)
    try:
        tg.set_backward_engine(engine, override=True)
        sp, _, losses = await _minibatch(engine, 2)
        await tg.sum(losses).backward()
        assert len(sp.gradients) == 2
        await tg.TGD(parameters=[sp]).step()
        assert sp.value.startswith("new ")
    finally:
        _clear_backward_engine()


async def test_aggregate_gives_every_child_feedback_and_reduces_grouped_gradients() -> None:
    """tg.aggregate: each summand gets feedback; the shared prompt gets one merged gradient."""
    transport = MockTransport(answer)
    engine = engine_with(transport)
    sp, responses, losses = await _minibatch(engine, 3)
    start = len(transport.requests)
    await tg.aggregate(losses).backward(engine)
    sent = bodies(transport, start)
    assert all(len(loss.gradients) == 1 for loss in losses)
    assert all(len(r.gradients) == 1 for r in responses)
    reduce = [b for b in sent if b["messages"][0]["content"] == prompts.REDUCE_SYSTEM_PROMPT]
    assert len(sent) == 3 + 3 + 1 and len(reduce) == 1
    user = reduce[0]["messages"][1]["content"]
    assert user.count("<FEEDBACK>") == 3
    assert "<IMPROVED_VARIABLE>" not in _text(reduce[0])
    (merged,) = sp.gradients
    assert merged.value.startswith("merged ")
    to_sp = [
        r.body for r in transport.requests[start:] if b"<ROLE> system prompt to the model" in r.body
    ]
    assert len(to_sp) == 3
    for raw in to_sp:
        assert f"<FEEDBACK>feedback {hashlib.sha256(raw).hexdigest()[:10]}</FEEDBACK>" in user


async def test_compute_gradients_returns_feedback_without_mutating() -> None:
    """compute_gradients returns every reached variable's gradients and writes none."""
    transport = MockTransport(answer)
    engine = engine_with(transport)
    sp, responses, losses = await _minibatch(engine, 2)
    total = tg.sum(losses)
    result = await compute_gradients(total, engine)
    everything = list(total.walk())
    assert all(v.gradients == [] for v in everything)
    assert len(result[sp]) == 2
    assert [len(result[r]) for r in responses] == [1, 1]
    assert result[total] == []
    assert set(result) == {total, sp, *responses, *losses}
    await total.backward(engine)
    assert [g.value for g in sp.gradients] == [g.value for g in result[sp]]


async def test_backward_accumulates_onto_earlier_gradients() -> None:
    """A second pass adds to a parameter's gradients, earlier ones first, as in TextGrad."""
    engine = engine_with(MockTransport(answer))
    sp, _, losses = await _minibatch(engine, 1)
    await losses[0].backward(engine)
    first = list(sp.gradients)
    response = await tg.BlackboxLLM(engine, sp)(frozen("another question", "question"))
    await (await tg.TextLoss("Judge it.", engine=engine)(response)).backward(engine)
    assert sp.gradients[:1] == first and len(sp.gradients) == 2


async def test_aggregate_of_empty_feedback_makes_no_reduce_call() -> None:
    """Empty feedback reaching a node twice through tg.aggregate is not sent to a reduce call."""
    transport = MockTransport(answer)
    engine = engine_with(transport)
    sp = trainable("Answer.", "system prompt")
    response = await tg.BlackboxLLM(engine, sp)(frozen("q", "question"))
    parts = [tg.sum([response, frozen(f"note {i}", "note")]) for i in range(2)]
    start = len(transport.requests)
    await tg.aggregate(parts).backward(engine)
    sent = bodies(transport, start)
    assert not any(b["messages"][0]["content"] == prompts.REDUCE_SYSTEM_PROMPT for b in sent)
    # with no feedback anywhere the response's backward takes the evaluation (base) branch,
    # exactly as it does under tg.sum
    assert all("addresses this feedback" not in _text(b) for b in sent)


async def test_concurrent_backward_passes_keep_every_gradient() -> None:
    """Per-sample backward passes run together all leave their feedback on the shared prompt."""
    engine = engine_with(MockTransport(answer))
    sp, _, losses = await _minibatch(engine, 3)
    await asyncio.gather(*(loss.backward(engine) for loss in losses))
    assert len(sp.gradients) == 3


# --- export -----------------------------------------------------------------------------------


async def test_to_dot_draws_every_variable_and_edge_with_escaped_labels() -> None:
    """DOT output has one node per variable, an edge per input, escaped quotes, grad_fn names."""
    engine = engine_with(MockTransport(answer))
    sp = trainable('Say "hi"', "system prompt")
    x = frozen("q", "question")
    response = await tg.BlackboxLLM(engine, sp)(x)
    loss = await tg.TextLoss("Judge it.", engine=engine)(response)
    await loss.backward(engine)
    dot = loss.to_dot()
    assert dot.startswith("digraph asynctg {") and dot.rstrip().endswith("}")
    assert dot.count("[label=") == 5  # judge prompt, response, sp, x, loss
    assert dot.count(" -> ") == 4
    assert 'Say \\"hi\\"' in dot
    assert "grad_fn: LLMCall" in dot
    assert dot.count("fillcolor") == 3  # loss, response, sp require gradients
    assert "feedback:" not in dot
    assert "feedback: feedback " in loss.to_dot(show_gradients=True)


async def test_to_mermaid_draws_a_flowchart() -> None:
    """Mermaid output is a flowchart with a node per variable and an arrow per input."""
    a = trainable('say "x"\nplease', "first")
    b = frozen("b", "second")
    total = tg.sum([a, b])
    text = total.to_mermaid()
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert sum(" --> " in line for line in lines) == 2
    assert sum('["role:' in line for line in lines) == 3
    assert "#quot;x#quot;" in text and "<br/>" in text
    assert "grad_fn: Sum" in text


# --- concurrency against the simulator (loopback HTTP, counted in rounds) ---------------------


class Rounds:
    """An HTTP transport that sends requests in rounds, each round once the last is answered.

    Each request waits until every request made so far is waiting (none is on the wire) and
    the loop has nothing else to run; then they are all sent together. A pass that makes its
    independent calls concurrently needs as many rounds as its graph is deep, each as wide as a
    level: with a fixed latency per call, rounds x latency is its time, on any machine.
    """

    def __init__(self) -> None:
        self.http = AiohttpTransport()
        self.waiting: list[asyncio.Future[None]] = []
        self.open = 0  # sends begun and not yet answered
        self.widths: list[int] = []  # requests sent in each round

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        self.open += 1
        try:
            go: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiting.append(go)
            await go
            return await self.http.send(request)
        finally:
            self.open -= 1

    async def aclose(self) -> None:
        await self.http.aclose()

    async def drive(self, aw: Awaitable[T]) -> T:
        """Run ``aw``, sending a round whenever everything it has asked for is waiting."""
        task = asyncio.ensure_future(aw)
        try:
            while not task.done():
                for _ in range(100):  # let every runnable task run: all ready calls are made
                    await asyncio.sleep(0)
                if self.waiting and len(self.waiting) == self.open:
                    batch, self.waiting = self.waiting, []
                    self.widths.append(len(batch))
                    for go in batch:
                        go.set_result(None)
                else:  # requests are on the wire (or the task runs): let real time pass
                    await asyncio.wait([task], timeout=0.005)
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def _sim_engine(sim: SimServer, transport: Rounds) -> ChatEngine:
    return tg.get_engine("sim-1", base_url=sim.base_url, api_key="sk-test", transport=transport)


async def test_diamond_backward_finishes_in_depth_times_latency() -> None:
    """A diamond's 5 feedback calls go in 3 rounds of 1, 2 and 2 (its depth; sequential would
    be 5 rounds), so the pass takes 3 latencies."""
    rounds = Rounds()
    async with SimServer(SimConfig(record=True)) as sim, _sim_engine(sim, rounds) as engine:
        x = trainable("The sky is blue because of Rayleigh scattering.", "draft answer")

        async def forward() -> tg.Variable:
            a = await tg.autograd.LLMCall(engine, frozen("Critique.", "critic"))(x, "critique")
            b = await tg.autograd.LLMCall(engine, frozen("Expand.", "editor"))(x, "expansion")
            d = await tg.autograd.FormattedLLMCall(engine, "{a}\n---\n{b}", ["a", "b"])(
                inputs={"a": a, "b": b}
            )
            return await tg.TextLoss("Evaluate the combined text.", engine=engine)(d)

        loss = await rounds.drive(forward())
        assert rounds.widths == [1, 1, 1, 1]  # the forward calls, awaited one by one
        sim.reset_stats()
        rounds.widths.clear()
        await rounds.drive(loss.backward(engine))
        recorded = len(sim.requests)
    assert recorded == 5
    assert rounds.widths == [1, 2, 2]
    contexts = [x.gradients_context[g] for g in x.gradients]
    assert [c["response_desc"] for c in contexts if c] == ["critique", "expansion"]


async def test_minibatch_step_runs_near_the_depth_bound_with_3b_plus_1_calls() -> None:
    """B=16: the forward calls, two feedback levels and the step go in 4 rounds (16, 16, 16, 1)
    and 3B+1 calls: each level's B calls are in flight together."""
    batch = 16
    rounds = Rounds()
    async with SimServer(SimConfig(record=True)) as sim, _sim_engine(sim, rounds) as engine:
        sp, _, losses = await rounds.drive(
            _minibatch(engine, batch, "You are a careful calculator.")
        )
        total = tg.sum(losses)
        await rounds.drive(total.backward(engine))
        before = sp.value
        await rounds.drive(tg.TGD(engine=engine, parameters=[sp]).step())
        recorded = len(sim.requests)
    assert recorded == 3 * batch + 1
    assert rounds.widths == [batch, batch, batch, 1]
    assert len(sp.gradients) == batch
    assert sp.value != before and sp.value.startswith(before)


# --- bad input: typed errors with helpful messages ---------------------------------------------


def test_missing_role_description_is_a_config_error() -> None:
    """A Variable without role_description says what to pass."""
    with pytest.raises(tg.ConfigError, match="role_description="):
        tg.Variable("text")  # type: ignore[call-arg]
    with pytest.raises(tg.ConfigError, match="non-empty"):
        tg.Variable("text", role_description="  ")


@pytest.mark.parametrize("value", [["a", "b"], None, 42])
def test_non_text_value_is_a_config_error(value: Any) -> None:
    """A list, None or a number as a value is rejected, naming the type and the fix."""
    with pytest.raises(tg.ConfigError, match=type(value).__name__) as info:
        tg.Variable(value, role_description="r")
    assert "str(value)" in str(info.value)


def test_image_cannot_require_gradients() -> None:
    """An image Variable with requires_grad=True is rejected; non-image bytes too."""
    with pytest.raises(tg.ConfigError, match="requires_grad=False"):
        tg.Variable(PNG, requires_grad=True, role_description="image")
    with pytest.raises(tg.ConfigError, match="PNG, JPEG, GIF or WebP"):
        tg.Variable(b"plain bytes", requires_grad=False, role_description="image")
    assert frozen(PNG, "image").is_image


def test_frozen_variable_over_trainable_predecessors_is_a_graph_error() -> None:
    """requires_grad=False over predecessors needing gradients is a GraphError naming them."""
    p = trainable("p", "the prompt")
    with pytest.raises(tg.GraphError, match="'the prompt'"):
        tg.Variable("x", requires_grad=False, predecessors=[p], role_description="out")
    with pytest.raises(tg.GraphError, match="must be Variables"):
        tg.Variable("x", predecessors=["p"], role_description="out")  # type: ignore[list-item]


async def test_llm_call_rejects_non_variables_and_images() -> None:
    """LLMCall takes a text Variable: a str or an image is a ConfigError saying what to do."""
    engine = engine_with(MockTransport(answer))
    call = tg.autograd.LLMCall(engine)
    with pytest.raises(tg.ConfigError, match="wrap it"):
        await call("raw text")  # type: ignore[arg-type]
    with pytest.raises(tg.ConfigError, match="MultimodalLLMCall"):
        await call(frozen(PNG, "image"))


async def test_formatted_call_with_mismatched_inputs_is_a_config_error() -> None:
    """Missing or unexpected format fields are a ConfigError listing them; unknown ones too."""
    engine = engine_with(MockTransport(answer))
    call = tg.autograd.FormattedLLMCall(engine, "{a} {b}", fields=["a", "b"])
    with pytest.raises(tg.ConfigError, match=r"missing \['b'\]"):
        await call(inputs={"a": frozen("1", "a")})
    with pytest.raises(tg.ConfigError, match=r"unexpected \['c'\]"):
        await call(inputs={"a": frozen("1", "a"), "b": frozen("2", "b"), "c": frozen("3", "c")})
    with pytest.raises(tg.ConfigError, match=r"\['c'\]"):
        tg.autograd.FormattedLLMCall(engine, "{a} {c}", fields=["a"])


async def test_formatted_call_rejects_positional_placeholders() -> None:
    """A '{}' placeholder is a ConfigError when the call is built, not an IndexError later."""
    engine = engine_with(MockTransport(answer))
    try:
        call = tg.autograd.FormattedLLMCall(engine, "Q: {}", fields=[])
    except tg.ConfigError:
        return
    with pytest.raises(tg.ConfigError):
        await call(inputs={})


def test_sum_of_nothing_is_a_config_error() -> None:
    """tg.sum needs a non-empty list of Variables."""
    with pytest.raises(tg.ConfigError, match="non-empty list"):
        tg.sum([])
    with pytest.raises(tg.ConfigError, match="non-empty list"):
        tg.sum(trainable("a", "a"))  # type: ignore[arg-type]


def test_parse_output_without_tags_is_an_evaluation_parse_error() -> None:
    """A judge reply lacking its tags raises EvaluationParseError carrying reply and tags."""
    engine = engine_with(MockTransport(answer))
    judge = tg.MultiFieldTokenParsedEvaluation(
        "Is it right?",
        role_descriptions=["prediction", "answer"],
        engine=engine,
        parse_tags=["<ACCURACY>", "</ACCURACY>"],
    )
    assert judge.parse_output(frozen("ok <ACCURACY> 1 </ACCURACY>", "eval")) == "1"
    with pytest.raises(tg.EvaluationParseError, match="<ACCURACY>") as info:
        judge.parse_output(frozen("It looks right to me.", "eval"))
    assert info.value.reply == "It looks right to me."
    assert info.value.tags == ("<ACCURACY>", "</ACCURACY>")
    assert isinstance(info.value, ValueError)


async def test_backward_of_a_non_variable_is_a_graph_error() -> None:
    """backward on something that is not a Variable is a GraphError."""
    engine = engine_with(MockTransport(answer))
    with pytest.raises(tg.GraphError, match="needs a Variable"):
        await compute_gradients("loss", engine)  # type: ignore[arg-type]


async def test_several_failures_in_one_backward_leave_as_the_first_error() -> None:
    """When many feedback calls fail at once (an exhausted quota), backward raises one typed
    error with a note naming the others' kinds, never an ExceptionGroup."""
    from support import scripted

    transport = scripted([ok("answer")] * 6, then=error(429, "quota", code="insufficient_quota"))
    engine = engine_with(transport)
    prompt = tg.Variable("p", requires_grad=True, role_description="system prompt")
    model = tg.BlackboxLLM(engine, prompt)
    losses = [
        await tg.TextLoss("Judge it.", engine=engine)(
            await model(tg.Variable(f"q{i}", requires_grad=False, role_description="query"))
        )
        for i in range(3)
    ]
    with pytest.raises(tg.InsufficientQuotaError) as caught:
        await tg.sum(losses).backward(engine)
    assert any("more error" in note for note in getattr(caught.value, "__notes__", []))
