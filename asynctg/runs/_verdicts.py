"""How model-written code's tests are judged, in the parent, from plain data the sandbox sends.

A test ``assert EXPR OP LITERAL`` (the literal on either side) is planned here
(``_plan``): only ``EXPR`` goes into the sandbox, and the parent compares the value that comes
back with the literal, which never enters it. A statement test counts its ``done`` record. What
the sandbox sends is untrusted: ``_outcomes`` decodes it with bounded nodes, depth, integer
length and hash collisions (``_decode``), checks that every record is the next test's, once,
and fails the whole run on anything forged (``_TAMPERED``). ``asynctg.runs.sandbox`` runs the
program and hands its result channel's bytes here.
"""

from __future__ import annotations

import ast
import collections
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TestOutcome"]

_LINE_CHARS = 600  # one test's line in that report


@dataclass(frozen=True)
class TestOutcome:
    """One test: the assert line, whether it passed, and why not."""

    __test__ = False  # not a pytest test class, whatever its name

    test: str
    passed: bool
    message: str = ""

    def line(self) -> str:
        text = self.test if self.passed else f"{self.test}  # fails: {self.message}"
        return text if len(text) <= _LINE_CHARS else text[: _LINE_CHARS - 3] + "..."


# --- tests: what the child evaluates, what stays here ----------------------------------------

_OPS: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.In: ("in", lambda a, b: a in b),
    ast.NotIn: ("not in", lambda a, b: a not in b),
    ast.Is: ("is", operator.is_),
    ast.IsNot: ("is not", operator.is_not),
}
_MISSING = object()


@dataclass(frozen=True)
class _Plan:
    """How one test is judged. ``send`` goes to the child; the rest stays in the parent."""

    send: dict[str, Any] | None  # None: decided here without running (the test is broken)
    op: str = ""  # "" for a truth test or a statement
    expected: Any = _MISSING  # a literal side: never sent to the child
    expected_text: str = ""
    problem: str = ""
    flipped: bool = False  # the literal is the left side: compare(expected, actual)


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _MISSING


def _plan(test: str) -> _Plan:
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError) as exc:
        return _Plan(None, problem=f"the test does not compile: {exc}")
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], ast.Assert):
        return _Plan({"stmt": test})
    check = body[0].test
    if isinstance(check, ast.Compare) and len(check.ops) == 1 and type(check.ops[0]) in _OPS:
        left, right = check.left, check.comparators[0]
        op = _OPS[type(check.ops[0])][0]
        for literal_side, other, flipped in ((right, left, False), (left, right, True)):
            expected = _literal(literal_side)
            if expected is not _MISSING:
                text = ast.get_source_segment(test, literal_side) or ast.unparse(literal_side)
                return _Plan(
                    {"exprs": [ast.unparse(other)]},
                    op=op,
                    expected=expected,
                    expected_text=text,
                    flipped=flipped,
                )
        # both sides come from the child, as plain data, and are compared here
        text = ast.get_source_segment(test, right) or ast.unparse(right)
        return _Plan({"exprs": [ast.unparse(left), ast.unparse(right)]}, op=op, expected_text=text)
    return _Plan({"exprs": [ast.unparse(check)]})


class _Malformed(Exception):
    """A line no honest harness writes: the whole run is void."""


class _Unjudgeable(Exception):
    """A well-formed value this process will not build (it would cost quadratic time)."""


_MAX_NODES = 100_000  # as the harness's: more is never sent by it
_MAX_DEPTH = 120
_MAX_INT_CHARS = 4400  # str(int) past sys.int_max_str_digits (4300) fails in the harness
_MAX_SAME_HASH = 32  # elements of one set or dict sharing a hash; honest values have a few


def _distinct_hashes(items: list[Any]) -> None:
    """Refuse before building a set or dict whose elements share hashes: each would be
    compared with all earlier ones (a set of n integers that all hash to 0 takes n**2 / 2)."""
    seen: dict[int, int] = {}
    for item in items:
        h = hash(item)  # TypeError for an unhashable element: malformed
        seen[h] = n = seen.get(h, 0) + 1
        if n > _MAX_SAME_HASH:
            raise _Unjudgeable(
                f"returned a set or dict with more than {_MAX_SAME_HASH} elements sharing one "
                "hash value, which is not compared"
            )


def _decode(node: Any, budget: list[int], depth: int = 0) -> Any:
    """A tagged plain value from the child back into Python; _Malformed for anything else.

    ``budget`` holds the nodes still allowed: every loop here is bounded by it."""
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        raise _Malformed
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is list:
        return [_decode(x, budget, depth + 1) for x in node]
    if type(node) is not dict or len(node) != 1:
        raise _Malformed
    ((tag, inner),) = node.items()
    try:
        if tag == "int" and type(inner) is str and len(inner) <= _MAX_INT_CHARS:
            return int(inner)
        if tag == "float" and inner in ("nan", "inf", "-inf"):
            return float(inner)
        if tag == "bytes" and type(inner) is str:
            return bytes.fromhex(inner)
        items = [_decode(x, budget, depth + 1) for x in inner] if type(inner) is list else None
        if items is None:
            raise _Malformed
        if tag == "tuple":
            return tuple(items)
        if tag == "deque":
            return collections.deque(items)
        if tag == "complex" and len(items) == 2:
            return complex(items[0], items[1])
        if tag in ("set", "frozenset"):
            _distinct_hashes(items)
            return set(items) if tag == "set" else frozenset(items)
        if tag == "dict" and all(type(p) is list and len(p) == 2 for p in items):
            _distinct_hashes([k for k, _ in items])
            return {k: v for k, v in items}
    except (TypeError, ValueError, OverflowError) as exc:  # unhashable key, bad hex, ...
        raise _Malformed from exc
    raise _Malformed


def _short(value: Any, n: int = 300) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int past the digit limit, a cycle cannot happen
        text = f"<{type(value).__name__}>"
    return text if len(text) <= n else text[: n - 3] + "..."


def _judge(test: str, plan: _Plan, record: dict[str, Any]) -> TestOutcome:
    if "error" in record:
        return TestOutcome(test, False, str(record["error"])[:400])
    assert plan.send is not None
    if "done" in record:
        if "stmt" not in plan.send:  # a statement's result, in a comparison's place
            raise _Malformed
        return TestOutcome(test, True)
    try:
        values = [_decode(v, [_MAX_NODES]) for v in record["values"]]
    except _Unjudgeable as exc:
        return TestOutcome(test, False, str(exc))
    if not plan.op:
        holds = bool(values[0])
        return TestOutcome(test, holds, "" if holds else "the assertion does not hold")
    actual = values[0]
    expected = plan.expected if plan.expected is not _MISSING else values[1]
    compare = next(fn for symbol, fn in _OPS.values() if symbol == plan.op)
    try:
        holds = bool(compare(expected, actual) if plan.flipped else compare(actual, expected))
    except (TypeError, ValueError, RecursionError) as exc:
        return TestOutcome(test, False, f"the code returned {_short(actual)}, which fails: {exc}")
    if holds:
        return TestOutcome(test, True)
    wanted = plan.expected_text
    wanted = wanted if len(wanted) <= 300 else wanted[:297] + "..."
    if plan.op == "==":
        return TestOutcome(test, False, f"the code returned {_short(actual)}, expected {wanted}")
    if plan.flipped:
        return TestOutcome(
            test, False, f"the code returned {_short(actual)}; the test needs {wanted} {plan.op} it"
        )
    return TestOutcome(
        test, False, f"the code returned {_short(actual)}; the test needs it {plan.op} {wanted}"
    )


def _no_constant(name: str) -> Any:
    raise _Malformed(name)  # NaN and Infinity travel as tagged strings


def _small_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # records have two keys, tags one: refusing more before any is hashed keeps a crafted
    # object (colliding keys, where the hash seed is fixed) from costing quadratic time
    if len(pairs) > 2:
        raise _Malformed
    return dict(pairs)


_TAMPERED = (
    "no result: the program wrote to the test harness's result channel, so none of its "
    "results count"
)


def _outcomes(
    tests: list[str], plans: list[_Plan], raw: bytes, why_missing: str
) -> tuple[TestOutcome, ...]:
    """Pair the harness's lines with the tests; any line out of place voids the whole run.

    Blocking and CPU-bound on up to ``max_output_bytes`` of untrusted data: run it in a thread.
    """
    sent = [i for i, plan in enumerate(plans) if plan.send is not None]
    records: dict[int, dict[str, Any]] = {}
    lines = raw.split(b"\n")
    complete, _ = lines[:-1], lines[-1]  # a cut-off last line is simply missing
    try:
        for n, line in enumerate(complete):
            record = json.loads(line, parse_constant=_no_constant, object_pairs_hook=_small_object)
            send = plans[sent[n]].send if n < len(sent) else None
            if (
                send is None
                or type(record) is not dict
                or record.get("i") != n
                or type(record.get("i")) is not int
                or len(record) != 2
                or not (
                    type(record.get("error")) is str
                    or (record.get("done") is True and "stmt" in send)
                    or (
                        "exprs" in send
                        and type(record.get("values")) is list
                        and len(record["values"]) == len(send["exprs"])
                    )
                )
            ):
                raise _Malformed  # {"tampered": true} from the harness among them
            records[sent[n]] = record
        out = []
        for i, (test, plan) in enumerate(zip(tests, plans, strict=True)):
            if plan.send is None:
                out.append(TestOutcome(test, False, plan.problem))
            elif i in records:
                out.append(_judge(test, plan, records[i]))
            else:
                out.append(TestOutcome(test, False, why_missing))
        return tuple(out)
    except (_Malformed, ValueError, KeyError, TypeError, RecursionError):
        return tuple(TestOutcome(test, False, _TAMPERED) for test in tests)
