"""The prompts each differentiable function actually sends: every piece the method needs is there.

Requests are captured on the in-memory transport and decoded from the wire, so these tests see
exactly what a provider would see.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from support import engine_with, ok

import asynctg as tg
from asynctg import prompts, runtime
from asynctg.engine.client import ChatEngine
from asynctg.transport import HTTPRequest, HTTPResponse, MockTransport

OPT_TAG = "<IMPROVED_VARIABLE>"
PROTOCOL_TAGS = (
    "<LM_SYSTEM_PROMPT>",
    "<LM_INPUT>",
    "<LM_OUTPUT>",
    "<ROLE>",
    "<VARIABLE>",
    "<OBJECTIVE_FUNCTION>",
    "<FEEDBACK>",
    "<CONTEXT>",
    OPT_TAG,
)
LONG_PROMPT = " ".join(f"w{i}" for i in range(40))  # over 30 words: backward spans truncate it


def _png() -> bytes:
    """A valid 1x1 grayscale PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


PNG = _png()
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


# --- decoding captured requests ------------------------------------------------------------


def _parts_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text")


def body_text(body: dict[str, Any]) -> str:
    """All text of a request body's messages."""
    return "\n".join(_parts_text(m["content"]) for m in body["messages"])


def system_text(body: dict[str, Any]) -> str:
    return "\n".join(_parts_text(m["content"]) for m in body["messages"] if m["role"] == "system")


def user_text(body: dict[str, Any]) -> str:
    """The text of the last user message."""
    users = [m for m in body["messages"] if m["role"] == "user"]
    return _parts_text(users[-1]["content"])


def image_urls(body: dict[str, Any]) -> list[str]:
    out = []
    for m in body["messages"]:
        if isinstance(m["content"], list):
            out += [p["image_url"]["url"] for p in m["content"] if p["type"] == "image_url"]
    return out


def kind_of(body: dict[str, Any]) -> str:
    """Tell a request's kind from its tags and system prompt, as a reader of the traffic would."""
    text = body_text(body)
    if OPT_TAG in text:
        return "optimizer"
    if "<OBJECTIVE_FUNCTION>" in text:
        return "backward"
    if system_text(body) == prompts.REDUCE_SYSTEM_PROMPT:
        return "reduce"
    return "forward"


def between(text: str, start: str, end: str) -> str:
    """The text between the first ``start`` and the next ``end`` (asserting both exist)."""
    i = text.index(start) + len(start)
    return text[i : text.index(end, i)]


class Recorder:
    """An in-memory provider answering each kind of request in its format, by body hash."""

    def __init__(self) -> None:
        self.transport = MockTransport(self.handle)

    def handle(self, request: HTTPRequest) -> HTTPResponse:
        body = msgspec.json.decode(request.body)
        digest = hashlib.sha256(request.body).hexdigest()[:10]
        kind = kind_of(body)
        if kind == "optimizer":
            return ok(f"{OPT_TAG}improved {digest}</IMPROVED_VARIABLE>")
        if kind == "backward":
            return ok(f"feedback {digest}: state the unit of the answer explicitly.")
        if kind == "reduce":
            return ok(f"merged feedback {digest}")
        return ok(f"answer {digest}")

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(r.body) for r in self.transport.requests]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if kind_of(b) == kind]

    def backward_about(self, variable: tg.Variable) -> list[dict[str, Any]]:
        """Backward requests whose <VARIABLE> span is this variable's (short) value."""
        span = f"<VARIABLE> {variable.get_short_value()} </VARIABLE>"
        return [b for b in self.of_kind("backward") if span in user_text(b)]


@pytest.fixture(autouse=True)
def _no_backward_engine() -> Iterator[None]:
    runtime._global_backward_engine = None
    yield
    runtime._global_backward_engine = None


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def engine(rec: Recorder) -> ChatEngine:
    return engine_with(rec.transport)


def trainable(value: str, role: str) -> tg.Variable:
    return tg.Variable(value, requires_grad=True, role_description=role)


def frozen(value: str | bytes, role: str) -> tg.Variable:
    return tg.Variable(value, requires_grad=False, role_description=role)


EVAL = "Evaluate the answer critically; point out any error."


async def _prompt_answer_loss(
    engine: ChatEngine, system: str = "You answer arithmetic questions."
) -> tuple[tg.Variable, tg.Variable, tg.Variable, tg.Variable]:
    sp = trainable(system, "system prompt to the arithmetic model")
    x = frozen("What is 7 * 6?", "question to the model")
    response = await tg.BlackboxLLM(engine, sp)(x)
    loss = await tg.TextLoss(EVAL, engine=engine)(response)
    return sp, x, response, loss


# --- LLMCall and TextLoss ---------------------------------------------------------------------


async def test_text_loss_forward_sends_the_instruction_as_system_prompt(
    engine: ChatEngine, rec: Recorder
) -> None:
    """TextLoss's forward call has the evaluation instruction as system and the text as user."""
    _, _, response, loss = await _prompt_answer_loss(engine)
    forward = rec.of_kind("forward")
    assert len(forward) == 2
    assert forward[1]["messages"] == [
        {"role": "system", "content": EVAL},
        {"role": "user", "content": response.value},
    ]
    assert loss.value.startswith("answer ")


async def test_llm_call_base_branch_prompt_has_the_evaluation_as_objective(
    engine: ChatEngine, rec: Recorder
) -> None:
    """A loss's backward shows system prompt, input and output in their tags; objective = eval."""
    _, _, response, loss = await _prompt_answer_loss(engine)
    await loss.backward(engine)
    (body,) = rec.backward_about(response)
    assert body["messages"][0] == {"role": "system", "content": prompts.BACKWARD_SYSTEM_PROMPT}
    text = user_text(body)
    assert f"<LM_SYSTEM_PROMPT> {EVAL} </LM_SYSTEM_PROMPT>" in text
    assert f"<LM_INPUT> {response.value} </LM_INPUT>" in text
    assert f"<LM_OUTPUT> {loss.value} </LM_OUTPUT>" in text
    assert f"<ROLE> {response.role_description} </ROLE>" in text
    assert f"<VARIABLE> {response.value} </VARIABLE>" in text
    objective = between(text, "<OBJECTIVE_FUNCTION>", "</OBJECTIVE_FUNCTION>")
    assert "evaluation" in objective
    assert "addresses this feedback" not in objective
    assert OPT_TAG not in body_text(body)


async def test_llm_call_feedback_examples_enter_its_backward_prompt(
    engine: ChatEngine, rec: Recorder
) -> None:
    """Examples of good feedback given to an LLMCall reach the backward engine in <EXAMPLES>."""
    sp = trainable("You answer arithmetic questions.", "system prompt to the arithmetic model")
    x = frozen("What is 7 * 6?", "question to the model")
    examples = ["Say which step of the arithmetic went wrong.", "Quote the wrong number."]
    response = await tg.autograd.LLMCall(engine, sp, feedback_examples=examples)(x)
    loss = await tg.TextLoss(EVAL, engine=engine)(response)
    await loss.backward(engine)
    (about_prompt,) = rec.backward_about(sp)
    assert "<EXAMPLES>" + "\n".join(examples) + "</EXAMPLES>" in user_text(about_prompt)
    (about_response,) = rec.backward_about(response)  # TextLoss was given none
    assert "<EXAMPLES>" not in user_text(about_response)


def test_backward_system_prompt_forbids_rewriting_the_variable() -> None:
    """The feedback engine is told to criticise, not to write a new version of the variable."""
    text = prompts.BACKWARD_SYSTEM_PROMPT
    assert "Do NOT write a new version of the variable" in text
    assert "<OBJECTIVE_FUNCTION>" in text


async def test_llm_call_chain_branch_prompt_quotes_downstream_feedback_verbatim(
    engine: ChatEngine, rec: Recorder
) -> None:
    """The system prompt's backward shows the exchange and the response's feedback verbatim."""
    sp, x, response, loss = await _prompt_answer_loss(engine)
    await loss.backward(engine)
    (feedback,) = response.gradients
    (body,) = rec.backward_about(sp)
    text = user_text(body)
    assert f"<LM_SYSTEM_PROMPT> {sp.value} </LM_SYSTEM_PROMPT>" in text
    assert f"<LM_INPUT> {x.value} </LM_INPUT>" in text
    assert f"<LM_OUTPUT> {response.value} </LM_OUTPUT>" in text
    assert f"<ROLE> {sp.role_description} </ROLE>" in text
    assert f"<VARIABLE> {sp.value} </VARIABLE>" in text
    objective = between(text, "<OBJECTIVE_FUNCTION>", "</OBJECTIVE_FUNCTION>")
    assert f": {feedback.value} " in objective
    assert response.role_description in text  # where the output went
    # the frozen question gets no feedback call
    assert rec.backward_about(x) == []
    assert len(rec.of_kind("backward")) == 2


async def test_backward_span_is_shortened_but_role_and_conversation_are_whole(
    engine: ChatEngine, rec: Recorder
) -> None:
    """A >20-word variable appears in <VARIABLE> as its first and last ten words, as in TextGrad."""
    sp, _, _, loss = await _prompt_answer_loss(engine, system=LONG_PROMPT)
    await loss.backward(engine)
    (body,) = rec.backward_about(sp)
    span = between(user_text(body), "<VARIABLE>", "</VARIABLE>")
    assert span.strip() == sp.get_short_value() != LONG_PROMPT
    assert f"<LM_SYSTEM_PROMPT> {LONG_PROMPT} </LM_SYSTEM_PROMPT>" in user_text(body)


async def test_llm_call_without_system_prompt_says_none(engine: ChatEngine, rec: Recorder) -> None:
    """An LLMCall with no system prompt shows '(none)' and plans feedback for its input only."""
    draft = trainable("a draft answer", "draft answer to improve")
    out = await tg.autograd.LLMCall(engine)(draft)
    loss = await tg.TextLoss(EVAL, engine=engine)(out)
    await loss.backward(engine)
    (body,) = rec.backward_about(draft)
    assert "<LM_SYSTEM_PROMPT> (none) </LM_SYSTEM_PROMPT>" in user_text(body)
    assert f"<LM_INPUT> {draft.value} </LM_INPUT>" in user_text(body)


# --- FormattedLLMCall -------------------------------------------------------------------------


async def test_formatted_llm_call_sends_the_filled_format_and_shows_it_as_input(
    engine: ChatEngine, rec: Recorder
) -> None:
    """FormattedLLMCall fills its format string; backward shows the filled text as <LM_INPUT>."""
    question = frozen("How many legs has a spider?", "question")
    draft = trainable("Six.", "draft answer to the question")
    call = tg.autograd.FormattedLLMCall(
        engine, "Question: {question}\nDraft: {draft}", fields=["question", "draft"]
    )
    out = await call(inputs={"question": question, "draft": draft})
    filled = "Question: How many legs has a spider?\nDraft: Six."
    assert rec.bodies[0]["messages"] == [{"role": "user", "content": filled}]
    assert list(out.predecessors) == [question, draft]
    loss = await tg.TextLoss(EVAL, engine=engine)(out)
    await loss.backward(engine)
    (body,) = rec.backward_about(draft)
    text = user_text(body)
    assert f"<LM_INPUT> {filled} </LM_INPUT>" in text
    assert f"<LM_OUTPUT> {out.value} </LM_OUTPUT>" in text
    assert "<ROLE> draft answer to the question </ROLE>" in text
    (feedback,) = out.gradients
    assert feedback.value in between(text, "<OBJECTIVE_FUNCTION>", "</OBJECTIVE_FUNCTION>")
    assert rec.backward_about(question) == []


# --- StringBasedFunction ----------------------------------------------------------------------


def _exact(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> str:
    return "correct" if prediction.value.strip() == ground_truth_answer.value else "wrong"


async def _exact_async(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> str:
    return _exact(prediction, ground_truth_answer)


PURPOSE = "checks whether the prediction equals the ground truth answer"


@pytest.mark.parametrize("fn", [_exact, _exact_async], ids=["sync", "async"])
async def test_string_function_base_prompt_shows_inputs_and_output(
    engine: ChatEngine, rec: Recorder, fn: Any
) -> None:
    """A Python loss's backward shows purpose, named inputs with roles, and output in its tags."""
    sp = trainable("Answer with a number.", "system prompt")
    response = await tg.BlackboxLLM(engine, sp)(frozen("7 * 6?", "question"))
    y = frozen("42", "ground truth answer")
    check = tg.autograd.StringBasedFunction(fn, function_purpose=PURPOSE)
    loss = await check(inputs=dict(prediction=response, ground_truth_answer=y))
    assert loss.value == "wrong"
    assert list(loss.predecessors) == [response, y]
    await loss.backward(engine)
    (body,) = rec.backward_about(response)
    text = user_text(body)
    assert f"Purpose of the function: {PURPOSE}" in text
    inputs = between(text, "<INPUTS_TO_FUNCTION>", "</INPUTS_TO_FUNCTION>")
    assert f"**Prediction (role: {response.role_description})**: {response.value}" in inputs
    assert "**Ground truth answer (role: ground truth answer)**: 42" in inputs
    assert "<OUTPUT_OF_FUNCTION> wrong </OUTPUT_OF_FUNCTION>" in text
    assert f"<ROLE> {response.role_description} </ROLE>" in text
    assert f"<VARIABLE> {response.value} </VARIABLE>" in text
    objective = between(text, "<OBJECTIVE_FUNCTION>", "</OBJECTIVE_FUNCTION>")
    assert "evaluation" in objective and "addresses this feedback" not in objective
    assert "<LM_INPUT>" not in text
    assert rec.backward_about(y) == []


async def test_string_function_chain_prompt_quotes_feedback_on_its_output(
    engine: ChatEngine, rec: Recorder
) -> None:
    """A Python function mid-graph passes its output's feedback verbatim into the objective."""
    draft = trainable("forty two", "answer in words")
    upper = tg.autograd.StringBasedFunction(
        lambda text: text.value.upper(), function_purpose="upper-cases the text"
    )
    shouted = await upper(inputs={"text": draft})
    loss = await tg.TextLoss(EVAL, engine=engine)(shouted)
    await loss.backward(engine)
    (feedback,) = shouted.gradients
    (body,) = rec.backward_about(draft)
    text = user_text(body)
    assert "<OUTPUT_OF_FUNCTION> FORTY TWO </OUTPUT_OF_FUNCTION>" in text
    objective = between(text, "<OBJECTIVE_FUNCTION>", "</OBJECTIVE_FUNCTION>")
    assert f": {feedback.value} " in objective
    assert "OUTPUT_OF_FUNCTION" in objective


# --- MultimodalLLMCall ------------------------------------------------------------------------


async def test_multimodal_call_keeps_the_image_in_forward_backward_context_and_optimizer(
    engine: ChatEngine, rec: Recorder
) -> None:
    """The image travels in the forward request, the backward request, the context, the step."""
    sp = trainable("Describe images precisely.", "system prompt to the vision model")
    image = frozen(PNG, "image to describe")
    question = frozen("What colour is the pixel?", "question about the image")
    response = await tg.autograd.MultimodalLLMCall(engine, sp)([image, question])
    (forward,) = rec.bodies
    assert forward["messages"][0] == {"role": "system", "content": sp.value}
    assert forward["messages"][1]["content"] == [
        {"type": "image_url", "image_url": {"url": PNG_URL}},
        {"type": "text", "text": "What colour is the pixel?"},
    ]
    loss = await tg.TextLoss(EVAL, engine=engine)(response)
    await loss.backward(engine)
    (body,) = rec.backward_about(sp)
    assert image_urls(body) == [PNG_URL]
    text = user_text(body)
    assert "What colour is the pixel?" in text
    assert "<LM_INPUT>" in text
    assert f"<LM_SYSTEM_PROMPT> {sp.value} </LM_SYSTEM_PROMPT>" in text
    assert f"<LM_OUTPUT> {response.value} </LM_OUTPUT>" in text
    assert f"<ROLE> {sp.role_description} </ROLE>" in text
    assert f"<VARIABLE> {sp.value} </VARIABLE>" in text
    (feedback,) = response.gradients
    assert feedback.value in between(text, "<OBJECTIVE_FUNCTION>", "</OBJECTIVE_FUNCTION>")
    (g,) = sp.gradients
    context = sp.gradients_context[g]
    assert context is not None and PNG in context["context"]
    await tg.TGD(engine=engine, parameters=[sp]).step()
    (opt,) = rec.of_kind("optimizer")
    assert image_urls(opt) == [PNG_URL]
    assert f"<FEEDBACK>{g.value}</FEEDBACK>" in user_text(opt) + body_text(opt)


# --- evaluations ------------------------------------------------------------------------------


async def test_multi_field_evaluation_prompt_labels_every_field(
    engine: ChatEngine, rec: Recorder
) -> None:
    """MultiFieldEvaluation's backward shows the instruction and each field under its role."""
    question = frozen("What is 7 * 6?", "q")
    truth = frozen("42", "y")
    prediction = trainable("41", "p")
    evaluation = tg.MultiFieldEvaluation(
        "Is the prediction correct? Answer yes or no.",
        role_descriptions=["question", "ground truth answer", "prediction by the model"],
        engine=engine,
    )
    loss = await evaluation([question, truth, prediction])
    await loss.backward(engine)
    (body,) = rec.backward_about(prediction)
    text = user_text(body)
    system = tg.MultiFieldEvaluation.DEFAULT_SYSTEM_PROMPT
    assert f"<LM_SYSTEM_PROMPT> {system} </LM_SYSTEM_PROMPT>" in text
    lm_input = between(text, "<LM_INPUT>", "</LM_INPUT>")
    assert "Is the prediction correct? Answer yes or no." in lm_input
    assert "**question**: What is 7 * 6?" in lm_input
    assert "**ground truth answer**: 42" in lm_input
    assert "**prediction by the model**: 41" in lm_input
    assert "<ROLE> prediction by the model </ROLE>" in text
    assert "<VARIABLE> 41 </VARIABLE>" in text
    assert "addresses this feedback" not in text
    assert len(rec.of_kind("backward")) == 1  # frozen fields get no call


async def test_multi_choice_test_time_prompt_has_question_answer_and_instruction(
    engine: ChatEngine, rec: Recorder
) -> None:
    """MultiChoiceTestTime's backward shows its critic prompt, the question and the solution."""
    solution = trainable("The answer is (B) because 2 + 2 = 5.", "solution to the question")
    loss_fn = tg.MultiChoiceTestTime("Check the solution; {be} critical.", engine=engine)
    loss = await loss_fn("What is 2 + 2? (A) 4 (B) 5", solution)
    await loss.backward(engine)
    (body,) = rec.backward_about(solution)
    text = user_text(body)
    system = tg.loss.DEFAULT_TEST_TIME_SYSTEM_PROMPT
    assert f"<LM_SYSTEM_PROMPT> {system} </LM_SYSTEM_PROMPT>" in text
    lm_input = between(text, "<LM_INPUT>", "</LM_INPUT>")
    assert "Check the solution; {be} critical." in lm_input
    assert "Question: What is 2 + 2? (A) 4 (B) 5" in lm_input
    assert f"Answer by the language model: {solution.value}" in lm_input
    assert "<ROLE> solution to the question </ROLE>" in text
    assert f"<VARIABLE> {solution.value} </VARIABLE>" in text
    assert loss.role_description == "evaluation of the solution to the question"
    assert len(rec.of_kind("backward")) == 1


# --- tg.sum -----------------------------------------------------------------------------------


async def test_sum_passes_feedback_once_and_losses_under_it_take_the_base_branch(
    engine: ChatEngine, rec: Recorder
) -> None:
    """Each summand of a root sum gets one empty gradient; its backward takes the base branch."""
    sp = trainable("Answer briefly.", "system prompt")
    model = tg.BlackboxLLM(engine, sp)
    responses = [await model(frozen(f"question {i}", "question")) for i in range(2)]
    losses = [await tg.TextLoss(EVAL, engine=engine)(r) for r in responses]
    total = tg.sum(losses)
    await total.backward(engine)
    for loss, response in zip(losses, responses, strict=True):
        assert [g.value for g in loss.gradients] == [""]
        (body,) = rec.backward_about(response)
        objective = between(user_text(body), "<OBJECTIVE_FUNCTION>", "</OBJECTIVE_FUNCTION>")
        assert "addresses this feedback" not in objective
        assert "\n" not in objective.strip()
    assert len(sp.gradients) == 2


async def test_sum_feedback_reaches_each_summand_once_with_its_role(
    engine: ChatEngine, rec: Recorder
) -> None:
    """Feedback on a sum reaches each distinct summand once, naming the summand's role."""
    a = trainable("alpha", "first part")
    b = trainable("beta", "second part")
    total = tg.sum([a, b, a])
    assert total.value == "alpha\nbeta\nalpha"
    loss = await tg.TextLoss(EVAL, engine=engine)(total)
    await loss.backward(engine)
    (feedback,) = total.gradients
    for v in (a, b):
        (g,) = v.gradients
        assert g.value == prompts.sum_feedback(v.role_description, feedback.value)
        assert v.role_description in g.value and feedback.value in g.value
        assert v.gradients_context[g] is None
    assert len(rec.of_kind("backward")) == 1  # only loss -> total; the sum costs no call


# --- the optimizer's prompt -------------------------------------------------------------------


async def test_optimizer_prompt_has_full_value_context_and_one_block_per_gradient(
    engine: ChatEngine, rec: Recorder
) -> None:
    """The step prompt shows role, the whole value, <CONTEXT>, one <FEEDBACK> per gradient."""
    sp = trainable(LONG_PROMPT, "system prompt to the model")
    response = await tg.BlackboxLLM(engine, sp)(frozen("What is 7 * 6?", "question"))
    mixed = tg.sum([response, sp])  # sp gets one gradient with context and one without
    loss = await tg.TextLoss(EVAL, engine=engine)(mixed)
    await loss.backward(engine)
    with_context, alone = sp.gradients
    assert sp.gradients_context[with_context] is not None
    assert sp.gradients_context[alone] is None
    optimizer = tg.TGD(
        engine=engine,
        parameters=[sp],
        constraints=["Keep it under 100 words."],
        in_context_examples=["Example prompt: think step by step."],
    )
    await optimizer.step()
    (body,) = rec.of_kind("optimizer")
    assert system_text(body) == prompts.optimizer_system_prompt()
    text = user_text(body)
    assert "<ROLE>system prompt to the model</ROLE>" in text
    assert f"<VARIABLE> {LONG_PROMPT} </VARIABLE>" in text
    context = between(text, "<CONTEXT>", "</CONTEXT>")
    assert context.count("<FEEDBACK>") == 2 == context.count("</FEEDBACK>")
    assert f"<FEEDBACK>{with_context.value}</FEEDBACK>" in context
    assert f"<FEEDBACK>{alone.value}</FEEDBACK>" in context
    conversation = between(context, "<CONVERSATION>", "</CONVERSATION>")
    assert "<LM_INPUT> What is 7 * 6? </LM_INPUT>" in conversation
    assert context.count("<CONVERSATION>") == 1
    assert "<CONSTRAINTS>Constraint 1: Keep it under 100 words.</CONSTRAINTS>" in text
    assert "<EXAMPLES>Example prompt: think step by step.</EXAMPLES>" in text
    assert "<PAST_ITERATIONS>" not in text
    assert "<IMPROVED_VARIABLE>{the improved variable}</IMPROVED_VARIABLE>" in text
    assert sp.value.startswith("improved ")


async def test_optimizer_prompt_leaves_out_optional_sections_when_unused(
    engine: ChatEngine,
) -> None:
    """Without constraints, examples, memory or momentum those tags are absent."""
    sp = trainable("Be brief.", "system prompt")
    g = tg.Variable("Mention units.", requires_grad=False, role_description="feedback")
    sp.gradients = [g]
    sp.gradients_context = {g: None}
    text = tg.TGD(engine=engine, parameters=[sp]).update_prompt(sp)
    assert isinstance(text, str)
    for tag in ("<CONSTRAINTS>", "<EXAMPLES>", "<PAST_ITERATIONS>", "<FEEDBACK-1>"):
        assert tag not in text
    assert between(text, "<CONTEXT>", "</CONTEXT>") == "<FEEDBACK>Mention units.</FEEDBACK>\n\n"


async def test_custom_new_variable_tags_are_named_in_every_format_instruction(
    engine: ChatEngine, rec: Recorder
) -> None:
    """Custom tags appear in the system prompt and format instruction; the default ones do not."""
    sp = trainable("Be brief.", "system prompt")
    g = tg.Variable("Mention units.", requires_grad=False, role_description="feedback")
    sp.gradients = [g]
    sp.gradients_context = {g: None}
    rec.transport.handler = lambda request: ok("<NEW_PROMPT> Be brief; give units. </NEW_PROMPT>")
    optimizer = tg.TGD(
        engine=engine, parameters=[sp], new_variable_tags=["<NEW_PROMPT>", "</NEW_PROMPT>"]
    )
    await optimizer.step()
    (body,) = rec.bodies
    assert "<NEW_PROMPT>" in system_text(body) and "</NEW_PROMPT>" in system_text(body)
    assert "<NEW_PROMPT>{the improved variable}</NEW_PROMPT>" in user_text(body)
    assert OPT_TAG not in body_text(body)
    assert sp.value == "Be brief; give units."


# --- telling kinds of traffic apart -----------------------------------------------------------


async def test_request_kinds_are_told_apart_by_their_tags(
    engine: ChatEngine, rec: Recorder
) -> None:
    """<IMPROVED_VARIABLE> only in optimizer calls, <OBJECTIVE_FUNCTION> only in backward calls."""
    sp = trainable("Answer briefly.", "system prompt")
    model = tg.BlackboxLLM(engine, sp)
    responses = [await model(frozen(f"question {i}", "question")) for i in range(3)]
    losses = [await tg.TextLoss(EVAL, engine=engine)(r) for r in responses]
    await tg.aggregate(losses).backward(engine)
    await tg.TGD(engine=engine, parameters=[sp]).step()
    kinds = [kind_of(b) for b in rec.bodies]
    assert kinds.count("forward") == 6
    assert kinds.count("backward") == 6
    assert kinds.count("reduce") == 1
    assert kinds.count("optimizer") == 1
    for body in rec.bodies:
        text = body_text(body)
        kind = kind_of(body)
        assert (OPT_TAG in text) == (kind == "optimizer")
        assert ("<OBJECTIVE_FUNCTION>" in text) == (kind == "backward")
        if kind == "forward":
            assert not any(tag in text for tag in PROTOCOL_TAGS)
        if kind == "reduce":
            assert user_text(body).count("<FEEDBACK>") == 3
