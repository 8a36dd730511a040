"""Default answers of the simulated model: they follow the request's format instructions.

The simulator does not understand language; it recognises the kinds of request asynctg (and
TextGrad) send by their tags and format instructions, and answers in the expected format, so a
whole optimization loop runs end to end against it. The rules, first match wins:

1. Optimizer request (contains ``<IMPROVED_VARIABLE>``): reply
   ``<IMPROVED_VARIABLE>value + one tip</IMPROVED_VARIABLE>``, where *value* is the text of the
   request's ``<VARIABLE>`` block and the tip is a prompt-engineering sentence the value does not
   already contain, so every step visibly changes the prompt.
2. Backward request (contains ``<OBJECTIVE_FUNCTION>``): two or three sentences of critical
   feedback, no tags, then (with ``feedback_tokens``) elaborating sentences up to about that many
   tokens, as real models write. (Checked before the judge rule: a backward request about a
   judge call quotes the judge's ``<ACCURACY>`` instruction.)
2b. Reduce request (``<FEEDBACK>`` blocks, neither tag above): every distinct feedback sentence
   found in the blocks, once, with how many blocks raised it.
3. LLM-judge request (contains ``<ACCURACY>``): a short evaluation, then
   ``<ACCURACY> 1 </ACCURACY>`` or ``<ACCURACY> 0 </ACCURACY>``. When the request labels its
   fields the way multi-field evaluations do (``**ground truth answer**: ...`` and
   ``**... prediction ...**: ...``), the verdict compares the prediction's final answer with the
   ground truth (numbers by value, text by words); otherwise it is a coin flip.
4. Another new-value tag instruction, e.g. "send the new text between <NEW_PROMPT> and
   </NEW_PROMPT>" or ``<X>{the improved variable}</X>``: answered like rule 1 with tag X.
5. A request whose system prompt shows a ```` ```python ```` block (a code-writing request):
   a Python code block with the first function signature of the user message and a body that
   returns a plain default for its return annotation (0, "", [], False, None). When the variable
   an optimizer request improves is Python code, rule 1 adds its tip as a ``#`` comment line, so
   the code stays runnable. A SMILES variable gets another drug-like molecule
   (``SIM_MOLECULES``) and a plan's JSON objective set the same set with one weight changed,
   so the science loops' evaluators always get a valid design to score.
6. A request for a final line ``Answer: $VALUE`` (BBH / GSM8K style): a line of reasoning, then
   ``Answer: N``. For object counting ("I have a piano, two cats, ... How many animals do I
   have?") the items of the asked category are really counted; the answer is right with
   probability ``min(0.95, 0.5 + 0.002 * words in the system prompt)`` and off by one otherwise,
   so prompt optimization that lengthens the system prompt raises accuracy. Word sorting ("Sort
   the following words alphabetically: List: ...") is answered the same way: the sorted words
   with that probability, otherwise two neighbours swapped.
7. Otherwise a short generic answer quoting the start of the last user message.

Every choice is drawn from the ``rng`` argument; the server seeds it from the configured seed and
a hash of the request body, so the same request always gets the same answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from random import Random
from typing import Any

from asynctg.sim.tokens import message_text

__all__ = [
    "FEEDBACK_SENTENCES",
    "PROMPT_TIPS",
    "SIM_MOLECULES",
    "count_objects",
    "counting_accuracy",
    "default_answer",
]

#: Sentences the simulated optimizer appends to a variable, one per step.
PROMPT_TIPS: tuple[str, ...] = (
    "Think through the problem step by step before answering.",
    "List the relevant items explicitly before combining them.",
    "Double-check every count and calculation before giving the final answer.",
    "When a quantity is written as a word, convert it to a number first.",
    "Ignore details that do not affect the answer.",
    "Restate the question briefly to make sure it is understood.",
    "Keep the reasoning concise and focused on what is asked.",
    "Verify the answer against every constraint in the question before finishing.",
    "State the final answer on its own line, exactly in the requested format.",
    "Prefer precise, unambiguous wording over general statements.",
)

#: Sentences the simulated model uses as textual gradients.
FEEDBACK_SENTENCES: tuple[str, ...] = (
    "The variable does not tell the model to reason step by step, which invites careless mistakes.",
    "It should ask for the final answer in a fixed format so that it can be checked reliably.",
    "The instructions are vague about which items count towards the total.",
    "Adding an explicit verification step would catch off-by-one errors.",
    "The wording could be more specific about the expected level of detail.",
    "It does not warn the model about distractor items that should be ignored.",
    "A short worked example would make the expected behaviour clearer.",
    "The response repeats the question instead of addressing the error in it.",
)

#: Sentences that lengthen simulated feedback to a realistic size (``feedback_tokens``).
ELABORATIONS: tuple[str, ...] = (
    "In this sample the response reached its answer without showing the intermediate steps.",
    "A reader cannot tell from the response which of the listed items were counted.",
    "The instruction could name the exact output format, for example a final line with a number.",
    "Ambiguous phrasing in the question was resolved silently instead of explicitly.",
    "The model would benefit from being told to re-read the question before answering.",
    "Nothing in the variable asks for a check of the result against the question.",
    "The answer format differs from the one the evaluation expects.",
    "The response spends words on restating the task rather than solving it.",
    "A rule about how to treat plural and collective nouns would remove a source of error.",
    "The variable could ask the model to list its assumptions before the final answer.",
)

_EVALUATIONS: tuple[str, ...] = (
    "The response addresses the question and its final answer is stated clearly.",
    "The reasoning is brief; the final answer follows from the steps given.",
    "The response is on topic, although some steps are not justified.",
    "The answer is stated in the requested format.",
)

_GENERIC: tuple[str, ...] = (
    "Here is a concise answer based on the information given.",
    "This is a brief simulated response.",
    "The request has been considered and answered as directly as possible.",
    "In short, the answer depends on the details stated in the request.",
)

# The span between a closing tag and the nearest opening tag before it: glossaries that merely
# mention "<VARIABLE>" earlier in the request must not swallow the text in between.
_VARIABLE_RE = re.compile(r"<VARIABLE>((?:(?!<VARIABLE>).)*?)</VARIABLE>", re.DOTALL)
# "<X>{the improved variable}</X>" or "<X> new prompt here </X>": a tag pair around a short
# placeholder mentioning a new/improved value
_PLACEHOLDER_TAG_RE = re.compile(
    r"<([A-Z][A-Z0-9_]*)>[^<>]{0,120}?(?i:\b(?:new|improved|updated|revised)\b)[^<>]{0,120}</\1>"
)
# "between <X> and </X>", "within <X> tags", "inside the <X> tags"
_BETWEEN_TAG_RE = re.compile(
    r"\b(?i:between|within|inside|in)\s+(?:the\s+)?<([A-Z][A-Z0-9_]*)>\s*(?:(?i:and|tags?)\b|</\1>)"
)
_NEW_WORD_RE = re.compile(r"\b(?:new|improved|updated|revised)\b", re.IGNORECASE)
_ANSWER_FORMAT_RE = re.compile(r"\banswer\s*:\s*\$", re.IGNORECASE)
_COUNTING_RE = re.compile(
    r"\bI have (.+?)\.\s*How many ([A-Za-z ]+?) do I have\s*\?", re.IGNORECASE | re.DOTALL
)
_OPTION_RE = re.compile(r"^\s*\(([A-R])\)", re.MULTILINE)
_SORTING_RE = re.compile(
    r"Sort the following words alphabetically:\s*List:\s*([^\n]+)", re.IGNORECASE
)
# "**ground truth answer**: ..." field labels of a multi-field evaluation, at line starts
_FIELD_RE = re.compile(r"^\*\*([^*\n]{1,120})\*\*:[ \t]?", re.MULTILINE)
_FINAL_ANSWER_RE = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE)
_SIGNATURE_RE = re.compile(
    r"^([ \t]*)def\s+([A-Za-z_]\w*)\s*\((.*?)\)\s*(?:->\s*([^:]+))?:", re.MULTILINE | re.DOTALL
)
_CODE_LINE_RE = re.compile(r"^\s*(?:def|class|import|from)\s", re.MULTILINE)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")

_NUMBER_WORDS: dict[str, int] = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update({"a": 1, "an": 1})

# The vocabulary of BIG-Bench Hard's object_counting task, by the category a question asks for.
_CATEGORIES: dict[str, frozenset[str]] = {
    "musical instrument": frozenset(
        "piano flute trombone violin accordion clarinet drum trumpet".split()
    ),
    "fruit": frozenset(
        "apple banana blackberry grape nectarine orange peach plum raspberry strawberry".split()
    ),
    "vegetable": frozenset(
        "cabbage carrot cauliflower celery garlic lettuce onion potato yam broccoli".split()
    ),
    "animal": frozenset(
        "bear cat chicken cow donkey duck fish frog goat mouse pig rabbit snail snake".split()
    ),
    "object": frozenset(
        "bed car chair couch fridge lamp microwave oven stove table toaster".split()
    ),
}
_WORD_CATEGORY: dict[str, str] = {
    word: category for category, words in _CATEGORIES.items() for word in words
}
_IRREGULAR_PLURALS = {"mice": "mouse", "geese": "goose", "fish": "fish", "children": "child"}


def _singular(word: str) -> str:
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "toes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _asked_category(phrase: str) -> str | None:
    """The lexicon category of "musical instruments", "fruits", ...; None for "objects"/"items"."""
    words = [_singular(w) for w in phrase.lower().split()]
    joined = " ".join(words)
    if joined in ("object", "item", "thing"):
        # BBH's "objects" question asks for everything listed
        return None
    for category in _CATEGORIES:
        if joined.endswith(category):
            return category
    return None


def count_objects(text: str) -> tuple[int, list[str], str] | None:
    """Count the items of an object-counting question, or None if ``text`` has none.

    Returns ``(count, counted_items, asked_phrase)``. Quantities are ``a``/``an``, number words
    up to twenty or digits; when the question asks for a category the simulator knows
    (musical instruments, fruits, vegetables, animals), listed items of another known category
    are left out, and unknown items are counted.

    >>> count_objects("I have a piano, two cats, and a car. How many animals do I have?")[0]
    2
    """
    match = _COUNTING_RE.search(text)
    if match is None:
        return None
    listing, asked = match.group(1), match.group(2).strip()
    category = _asked_category(asked)
    total = 0
    counted: list[str] = []
    for raw in re.split(r",\s*(?:and\s+)?|\s+and\s+", listing):
        words = raw.strip().lower().split()
        if not words:
            continue
        quantity = _NUMBER_WORDS.get(words[0])
        if quantity is None and words[0].isdigit():
            quantity = int(words[0])
        if quantity is None:
            continue
        if category is not None:
            kinds = {_WORD_CATEGORY.get(_singular(w)) for w in words[1:]} - {None}
            if kinds and category not in kinds:
                continue
        total += quantity
        counted.append(" ".join(words))
    return total, counted, asked


def counting_accuracy(system_prompt: str) -> float:
    """Probability of a right count: grows with the system prompt's length in words."""
    return min(0.95, 0.5 + 0.002 * len(system_prompt.split()))


def _texts(request: Mapping[str, Any]) -> tuple[str, str, str]:
    """(all text, system text, last user text) of a request's messages."""
    messages: Sequence[Any] = request.get("messages") or ()
    every: list[str] = []
    system: list[str] = []
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = message_text(message.get("content"))
        every.append(text)
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            last_user = text
    return "\n".join(every), "\n".join(system), last_user


#: The simulated optimizer's molecules for a SMILES variable: a drug-like scaffold with one
#: substituent on an aromatic ring (8 x 10 = 80 valid molecules, dockable in about a second at
#: exhaustiveness 1), drawn per request, so concurrent designs seldom meet.
SIM_SCAFFOLDS: tuple[str, ...] = (
    "OC(=O)c1ccc({R})cc1",
    "CC(=O)Nc1ccc({R})cc1",
    "OC(=O)c1ccc({R})nc1",
    "c1ccc2[nH]c({R})cc2c1",
    "O=C(NC1CC1)c1ccc({R})cc1",
    "Cc1ccc({R})cc1S(N)(=O)=O",
    "CN1CCN(CC1)c1ccc({R})cc1",
    "O=c1[nH]c2ccc({R})cc2o1",
)
SIM_SUBSTITUENTS: tuple[str, ...] = (
    "F",
    "Cl",
    "C",
    "OC",
    "N",
    "C(F)(F)F",
    "C#N",
    "O",
    "C(N)=O",
    "S(C)(=O)=O",
)
SIM_MOLECULES: tuple[str, ...] = tuple(
    scaffold.replace("{R}", group) for scaffold in SIM_SCAFFOLDS for group in SIM_SUBSTITUENTS
)
_SMILES_RE = re.compile(r"[A-Za-z0-9@+\-\[\]()=#$/\\%.:]{1,300}")


def _designed(value: str, text: str, rng: Random) -> str | None:
    """A new design for the science loops' variables, valid for their evaluators: another
    molecule for a SMILES string, a re-weighted objective set for a plan's JSON objectives."""
    if "SMILES" in text and _SMILES_RE.fullmatch(value):
        return rng.choice([m for m in SIM_MOLECULES if m != value])
    if value.startswith("[") and '"weight"' in value:
        try:
            objectives = json.loads(value)
        except ValueError:
            return None
        if not (isinstance(objectives, list) and objectives):
            return None
        if not all(
            isinstance(o, dict) and isinstance(o.get("weight"), int | float) for o in objectives
        ):
            return None
        changed = rng.randrange(len(objectives))
        factor = rng.choice((0.5, 2.0, 3.0))
        objectives[changed]["weight"] = round(objectives[changed]["weight"] * factor, 3)
        return json.dumps(objectives)
    return None


def _improved(text: str, tag: str, rng: Random) -> str:
    blocks = [block.strip() for block in _VARIABLE_RE.findall(text)]
    # the longest block is the value itself; shorter ones are mentions like "<VARIABLE> and"
    value = max(blocks, key=len) if blocks else ""
    designed = _designed(value, text, rng)
    if designed is not None:
        return f"<{tag}>{designed}</{tag}>"
    fresh = [tip for tip in PROMPT_TIPS if tip not in value]
    tip = rng.choice(fresh) if fresh else f"{rng.choice(PROMPT_TIPS)} (revision)"
    if value and _CODE_LINE_RE.search(value):
        # Python code: the tip goes into a comment, so the new value still runs
        new_value = f"{value}\n# {tip}"
    else:
        new_value = f"{value} {tip}" if value else tip
    return f"<{tag}>{new_value}</{tag}>"


def _new_value_tag(text: str) -> str | None:
    if "<" not in text:
        # the common case (no tags at all) must not pay for two regex scans
        return None
    match = _PLACEHOLDER_TAG_RE.search(text)
    if match is not None:
        return match.group(1)
    for match in _BETWEEN_TAG_RE.finditer(text):
        # the instruction must be about a new value, said shortly before the tag
        if _NEW_WORD_RE.search(text, max(0, match.start() - 200), match.end()):
            return match.group(1)
    return None


def _final_answer(system: str, user: str, rng: Random) -> str:
    counted = count_objects(user)
    if counted is not None:
        truth, items, asked = counted
        if rng.random() < counting_accuracy(system):
            answer = truth
        else:
            answer = truth + rng.choice((-1, 1))
            if answer < 0:
                answer = truth + 1
        listing = ", ".join(items) if items else "nothing relevant"
        return f"Counting the {asked}: {listing}. That makes {answer} in total.\nAnswer: {answer}"
    sorting = _SORTING_RE.search(user)
    if sorting is not None:
        words = sorted(sorting.group(1).split())
        if len(words) > 1 and rng.random() >= counting_accuracy(system):
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        shown = " ".join(words)
        return f"Sorting the {len(words)} words by their letters gives: {shown}.\nAnswer: {shown}"
    options = _OPTION_RE.findall(user)
    if options:
        choice = rng.choice(options)
        return f"Comparing the options, ({choice}) fits the question best.\nAnswer: ({choice})"
    numbers = [float(n) for n in _NUMBER_RE.findall(user)]
    if numbers:
        value = float(sum(numbers))
        shown = str(int(value)) if value.is_integer() else f"{value:g}"
        return f"Combining the quantities given in the question gives {shown}.\nAnswer: {shown}"
    guess = rng.randint(1, 20)
    return f"Estimating from the question, the value is {guess}.\nAnswer: {guess}"


def _fields(text: str) -> dict[str, str]:
    """The ``**label**: value`` fields of a multi-field evaluation, labels lower-cased."""
    marks = list(_FIELD_RE.finditer(text))
    out: dict[str, str] = {}
    if not marks:
        return out
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following is not None else len(text)
        out[mark.group(1).strip().lower()] = text[mark.end() : end].strip()
    return out


def _final(text: str) -> str:
    """The final answer of a reply: after its last "Answer:", else its last non-empty line."""
    found = _FINAL_ANSWER_RE.findall(text)
    if found:
        return str(found[-1]).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _same_answer(truth: str, prediction: str) -> bool:
    final = _final(prediction)
    numbers = _NUMBER_RE.findall(truth.replace(",", ""))
    if len(numbers) == 1 and truth.replace(",", "").strip() == numbers[0]:
        found = _NUMBER_RE.findall(final.replace(",", ""))
        return bool(found) and float(found[-1]) == float(numbers[0])

    def words(s: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", s.lower())

    return words(final) == words(truth)


def _judge(text: str, rng: Random) -> str:
    fields = _fields(text)
    truth = next((v for k, v in fields.items() if "ground truth" in k or "correct" in k), None)
    prediction = next((v for k, v in fields.items() if "prediction" in k), None)
    if truth is not None and prediction is not None:
        verdict = int(_same_answer(truth, prediction))
        reason = "matches" if verdict else "does not match"
        return f"The final prediction {reason} the ground truth. <ACCURACY> {verdict} </ACCURACY>"
    verdict = 1 if rng.random() < 0.5 else 0
    return f"{rng.choice(_EVALUATIONS)} <ACCURACY> {verdict} </ACCURACY>"


def _default_value(annotation: str | None) -> str:
    kind = (annotation or "").strip().lower()
    if kind.startswith(("int", "float")):
        return "0"
    if kind.startswith("str"):
        return '""'
    if kind.startswith("bool"):
        return "False"
    if kind.startswith(("list", "typing.list")):
        return "[]"
    return "None"


def _code_answer(user: str) -> str:
    match = _SIGNATURE_RE.search(user)
    if match is None:
        body = "def solution():\n    return None"
    else:
        indent, name, params, returns = match.groups()
        signature = f"def {name}({' '.join(params.split())})" + (
            f" -> {returns.strip()}:" if returns else ":"
        )
        value = _default_value(returns)
        if indent:
            # a method: keep it inside its class
            cls = re.search(r"^class\s+(\w+)", user, re.MULTILINE)
            head = f"class {cls.group(1) if cls else 'Solution'}:\n    "
            body = f"{head}{signature}\n        return {value}"
        else:
            body = f"{signature}\n    return {value}"
    return f"```python\nfrom typing import *\n\n{body}\n```"


def _feedback(rng: Random, tokens: int | None) -> str:
    sentences = rng.sample(FEEDBACK_SENTENCES, rng.choice((2, 3)))
    size = sum(len(x) + 1 for x in sentences)
    while tokens is not None and size < 4 * tokens:
        extra = rng.choice(ELABORATIONS)
        sentences.append(extra)
        size += len(extra) + 1
    return " ".join(sentences)


def _merged(text: str) -> str:
    blocks = text.count("<FEEDBACK>")
    counts = [(s, text.count(s)) for s in (*FEEDBACK_SENTENCES, *ELABORATIONS)]
    raised = [f"- {s} (raised in {n} of {blocks})" for s, n in counts if n]
    return f"Merged feedback from {blocks} sources:\n" + "\n".join(raised or ["- No criticism."])


def default_answer(
    request: Mapping[str, Any], rng: Random, *, feedback_tokens: int | None = None
) -> str:
    """The simulated model's reply to a decoded chat-completions request body.

    Pure: depends only on ``request`` and on draws from ``rng`` (see the module docstring for
    the rules). ``feedback_tokens`` is the rough length of backward replies (None: 2-3
    sentences).

    >>> default_answer({"messages": [{"role": "user", "content": "Hi"}]}, Random(0))[:9]
    'Simulated'
    """
    text, system, user = _texts(request)
    if "<IMPROVED_VARIABLE>" in text:
        return _improved(text, "IMPROVED_VARIABLE", rng)
    if "<OBJECTIVE_FUNCTION>" in text:
        return _feedback(rng, feedback_tokens)
    if "<FEEDBACK>" in text:
        return _merged(text)
    if "<ACCURACY>" in text:
        return _judge(text, rng)
    tag = _new_value_tag(text)
    if tag is not None:
        return _improved(text, tag, rng)
    if "```python" in system:
        return _code_answer(user)
    if "$" in text and _ANSWER_FORMAT_RE.search(text):
        return _final_answer(system, user or text, rng)
    words = user.split()
    opening = " ".join(words[:8]) + (" ..." if len(words) > 8 else "")
    return f'Simulated answer to "{opening}". {rng.choice(_GENERIC)}'
