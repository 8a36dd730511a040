"""A small aiohttp service on one shared engine: one job per request (no API key needed).

python examples/service.py                       # serve on 127.0.0.1:8080, simulator in-process
python examples/service.py --demo                # start, send 3 tenants' requests, print, exit
OPENAI_BASE_URL=... python examples/service.py --model gpt-4o-mini --price 0.15,0.6

POST /optimize  (header ``X-Tenant: NAME``; JSON body, every field optional)
    {"prompt": "initial system prompt", "questions": [["question", "answer"], ...],
     "max_calls": 20, "deadline": 30}
-> 200 {"prompt": "the improved prompt", "usage": {"calls": 13, "prompt_tokens": ..., ...}}
-> 429 {"error": {"type": "budget_exceeded", "limit": "max_calls", ...}, "usage": {...}}
-> 504 {"error": {"type": "deadline_exceeded", "deadline": 30.0, ...}, "usage": {...}}

Each request runs one step of prompt optimization (forward on the questions, backward, one
optimizer call: 3B+1 calls) inside its own job of the one engine the process opened at startup:
the job has the request's deadline and call cap (a client may ask for less than the server's,
never more) and the tenant's weight (from the server's table, never from the client), and
its usage is returned. The server runs with ``handler_cancellation=True``: aiohttp (3.9 and
later) does not cancel a handler when its client disconnects unless asked to, and without it
a disconnected client's job would go on spending to the end. Cancelled, the handler leaves
its job's block, which stops the job's calls at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web

import asynctg as tg
from asynctg.errors import BudgetExceededError, DeadlineExceededError
from asynctg.sim import SimConfig, SimServer

DEFAULT_PROMPT = "Answer the question. End with 'Answer: N'."
DEFAULT_QUESTIONS = [
    ("I have a flute, a piano, and two violins. How many musical instruments do I have?", "4"),
    ("I have three trumpets and a drum. How many musical instruments do I have?", "4"),
]
#: Bounds on what a client sends: the body is untrusted input.
MAX_BODY_BYTES = 64_000
MAX_QUESTIONS = 8
MAX_TEXT_CHARS = 2_000


@dataclass
class Settings:
    """What the server decides, whatever a client asks for."""

    max_calls: int = 40  # per request
    deadline: float = 60.0  # seconds per request
    max_cost: float | None = None  # dollars per request (needs a price)
    weights: Mapping[str, float] = field(default_factory=dict)  # tenant -> weight (default 1)


#: Called once per finished request with (job, outcome): an access log, metrics, a test.
OnFinished = Callable[[tg.Job, str], None]

ENGINE = web.AppKey("engine", tg.ChatEngine)
SETTINGS = web.AppKey("settings", Settings)
ON_FINISHED = web.AppKey("on_finished", OnFinished)
#: What a response reports of its job: engine.stats()'s field names, the job's own counts.
USAGE_FIELDS = (
    "calls",
    "requests",
    "retries",
    "rate_limited",
    "cache_hits",
    "coalesced",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
)
_NUMBERS = itertools.count(1)


class BadRequest(Exception):
    """The client's body is not what /optimize takes."""


def exact_match(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> int:
    """1 if the last number in the prediction is the ground truth, else 0."""
    numbers = [t for t in str(prediction.value).split() if t.strip(".").isdigit()]
    return int(bool(numbers) and numbers[-1].strip(".") == ground_truth_answer.value)


async def optimize_step(job: tg.Job, prompt: str, questions: list[tuple[str, str]]) -> str:
    """One step of prompt optimization, every call made through ``job``."""
    system_prompt = tg.Variable(
        prompt,
        requires_grad=True,
        role_description="system prompt to a model that answers counting questions",
    )
    model = tg.BlackboxLLM(job, system_prompt)
    check = tg.autograd.StringBasedFunction(exact_match, function_purpose="checks the answer")
    optimizer = tg.TextualGradientDescent(engine=job, parameters=[system_prompt])

    async def loss_for(question: str, answer: str) -> tg.Variable:
        x = tg.Variable(question, requires_grad=False, role_description="query to the model")
        y = tg.Variable(answer, requires_grad=False, role_description="correct answer")
        response = await model(x)
        return await check(inputs=dict(prediction=response, ground_truth_answer=y))

    losses = await asyncio.gather(*(loss_for(q, a) for q, a in questions))
    await tg.sum(list(losses)).backward(job)
    await optimizer.step()
    return str(system_prompt.value)


def _parse(body: Any, settings: Settings) -> tuple[str, list[tuple[str, str]], int, float]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    prompt = body.get("prompt", DEFAULT_PROMPT)
    if not isinstance(prompt, str) or not 0 < len(prompt) <= MAX_TEXT_CHARS:
        raise BadRequest(f"prompt must be a string of 1 to {MAX_TEXT_CHARS} characters")
    raw = body.get("questions", DEFAULT_QUESTIONS)
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_QUESTIONS:
        raise BadRequest(f"questions must be a list of 1 to {MAX_QUESTIONS} pairs")
    questions: list[tuple[str, str]] = []
    for pair in raw:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_TEXT_CHARS for s in pair)
        ):
            raise BadRequest('each question is ["question", "answer"], two short strings')
        questions.append((pair[0], pair[1]))
    # A client may ask for a tighter cap or deadline than the server's, never a looser one.
    max_calls = body.get("max_calls", settings.max_calls)
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise BadRequest("max_calls must be a positive integer")
    deadline = body.get("deadline", settings.deadline)
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline > 0:
        raise BadRequest("deadline must be a positive number of seconds")
    return (
        prompt,
        questions,
        min(max_calls, settings.max_calls),
        min(float(deadline), settings.deadline),
    )


def _usage(job: tg.Job) -> dict[str, Any]:
    stats = job.stats()
    return {k: stats[k] for k in ("job", "weight", *USAGE_FIELDS)}


async def optimize(request: web.Request) -> web.Response:
    """POST /optimize: one job of the shared engine for this request."""
    engine, settings = request.app[ENGINE], request.app[SETTINGS]
    on_finished: OnFinished | None = request.app.get(ON_FINISHED)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _error(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        prompt, questions, max_calls, deadline = _parse(json.loads(raw or b"{}"), settings)
    except (ValueError, BadRequest) as exc:  # json.JSONDecodeError is a ValueError
        return _error(400, "bad_request", str(exc))
    tenant = request.headers.get("X-Tenant", "anonymous")[:64]
    job = engine.job(
        f"{tenant}/{next(_NUMBERS)}",
        weight=settings.weights.get(tenant, 1.0),
        max_calls=max_calls,
        deadline=deadline,
        max_cost=settings.max_cost,
    )
    outcome = "cancelled"  # unless the block below ends otherwise
    try:
        async with job:
            try:
                new_prompt = await optimize_step(job, prompt, questions)
            except BudgetExceededError as exc:
                outcome = "budget_exceeded"
                return _error(429, outcome, str(exc), job, limit=exc.limit)
            except DeadlineExceededError as exc:
                outcome = "deadline_exceeded"
                return _error(504, outcome, str(exc), job, deadline=exc.deadline)
        outcome = "ok"
        return web.json_response({"prompt": new_prompt, "usage": _usage(job)})
    finally:
        # Reached on cancellation too (the client went away): the job is closed by now, its
        # calls stopped and its slots handed back.
        if on_finished is not None:
            on_finished(job, outcome)


def _error(
    status: int, kind: str, message: str, job: tg.Job | None = None, **detail: Any
) -> web.Response:
    payload: dict[str, Any] = {"error": {"type": kind, "message": message, **detail}}
    if job is not None:
        payload["error"]["job"] = job.name
        payload["usage"] = _usage(job)
    return web.json_response(payload, status=status)


def make_app(
    base_url: str | None,
    *,
    model: str = "sim-1",
    price: tuple[float, float] | None = (0.15, 0.6),
    settings: Settings | None = None,
    on_finished: OnFinished | None = None,
    engine_options: Mapping[str, Any] | None = None,
) -> web.Application:
    """The service: one engine for the process, opened at startup and closed at shutdown
    (``base_url`` None: a simulator started in-process)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings or Settings()
    if on_finished is not None:
        app[ON_FINISHED] = on_finished

    async def engine_context(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            url = base_url
            if url is None:
                sim = await stack.enter_async_context(SimServer(SimConfig(latency="50ms")))
                url = sim.base_url
            options = {"max_concurrency": 16, **(engine_options or {})}
            engine = tg.get_engine(model, base_url=url, price=price, **options)
            app[ENGINE] = await stack.enter_async_context(engine)
            yield

    app.cleanup_ctx.append(engine_context)
    app.router.add_post("/optimize", optimize)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app``; ``handler_cancellation=True`` so a client that disconnects cancels its
    handler, and with it its job (aiohttp >= 3.9 leaves the handler running otherwise)."""
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def demo(args: argparse.Namespace, base_url: str | None) -> None:
    """Start the service on a free port, send three tenants' requests at once, print usage."""
    weights = {"gold": 4.0, "silver": 2.0}
    app = make_app(base_url, model=args.model, price=args.price, settings=Settings(weights=weights))
    runner = await serve(app, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        async with ClientSession() as client:

            async def ask(tenant: str) -> dict[str, Any]:
                # Each tenant its own question: identical requests in flight together would
                # be sent once and shared (single-flight), counted for the job that sent it.
                body = {"questions": [[f"{tenant}: I have {len(tenant)} drums. How many?", "5"]]}
                url = f"http://127.0.0.1:{port}/optimize"
                async with client.post(url, json=body, headers={"X-Tenant": tenant}) as reply:
                    reply.raise_for_status()
                    result: dict[str, Any] = await reply.json()
                    return result

            results = await asyncio.gather(*(ask(t) for t in ("gold", "silver", "bronze")))
        for tenant, result in zip(("gold", "silver", "bronze"), results, strict=True):
            usage = result["usage"]
            print(
                f"{tenant}: weight {usage['weight']:g}, {usage['calls']} calls, "
                f"{usage['total_tokens']} tokens, ${usage['cost_usd']:.6f}"
            )
    finally:
        await runner.cleanup()


def _price(text: str) -> tuple[float, float]:
    prompt, completion = text.split(",")
    return float(prompt), float(completion)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    parser.add_argument("--model", default="sim-1")
    parser.add_argument("--price", type=_price, default=(0.15, 0.6), help="$/1M in,out")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--demo", action="store_true", help="send 3 requests, print, exit")
    args = parser.parse_args()
    if args.demo:
        await demo(args, args.base_url)
        return
    runner = await serve(
        make_app(args.base_url, model=args.model, price=args.price), args.host, args.port
    )
    print(f"serving on http://{args.host}:{args.port}/optimize")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    tg.run(main())
