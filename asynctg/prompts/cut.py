"""Cutting text that cannot fit a request, saying so where it was cut (``CUT_NOTICE``)."""

from __future__ import annotations

__all__ = ["CUT_NOTICE", "cut_to_fit"]

#: Put where text was removed, so the model that reads it knows something is missing.
CUT_NOTICE = " [... {n} characters cut here to fit the context window ...] "
# Spans cut first, longest first: the conversation's parts and the feedback, never the
# instructions around them, so the tags stay balanced and the request keeps its shape.
_CUT_TAGS = (
    "LM_INPUT",
    "LM_OUTPUT",
    "LM_SYSTEM_PROMPT",
    "INPUTS_TO_FUNCTION",
    "OUTPUT_OF_FUNCTION",
    "FEEDBACK",
    "OBJECTIVE_FUNCTION",
)
#: Characters kept of a span that is cut (half from its start, half from its end).
_CUT_KEEP = 200
_NOTICE_WIDTH = len(CUT_NOTICE.format(n=10**15))
#: Spans cut at most: model-written text may hold any number of tag pairs, and a few of the
#: longest always free enough (the rest is cut as a whole).
_MAX_CUTS = 16


def _tag_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the text inside each ``<TAG>...</TAG>`` of ``_CUT_TAGS``; linear."""
    spans = []
    for tag in _CUT_TAGS:
        start_tag, end_tag = f"<{tag}>", f"</{tag}>"
        pos = 0
        while True:  # each find moves on past the last span: bounded by len(text)
            i = text.find(start_tag, pos)
            if i < 0:
                break
            j = text.find(end_tag, i + len(start_tag))
            if j < 0:
                break
            spans.append((i + len(start_tag), j))
            pos = j + len(end_tag)
    return spans


def _cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    if limit <= _NOTICE_WIDTH:
        return text[:limit]
    keep = limit - _NOTICE_WIDTH
    head, tail = keep - keep // 2, keep // 2
    cut = len(text) - head - tail
    return text[:head] + CUT_NOTICE.format(n=cut) + (text[len(text) - tail :] if tail else "")


def cut_to_fit(text: str, limit: int, *, spans_only: bool = False) -> str:
    """``text`` in at most ``limit`` characters, the cuts marked with ``CUT_NOTICE``.

    The middles of the longest tagged spans (the input, output and system prompt of a
    conversation, the feedback) go first, each keeping its start and end; only when that is
    not enough is the middle of the whole text cut (never with ``spans_only``: the result may
    then be longer than ``limit``). Text within ``limit`` is returned as is.
    """
    if len(text) <= limit:
        return text
    accepted: list[tuple[int, int]] = []
    for s in sorted(_tag_spans(text), key=lambda s: s[0] - s[1]):  # longest first
        if all(s[1] <= a[0] or s[0] >= a[1] for a in accepted):  # nested spans: the outer one
            accepted.append(s)
            if len(accepted) == _MAX_CUTS:
                break
    need = len(text) - limit
    cuts: list[tuple[int, int]] = []
    for start, end in accepted:
        if need <= 0:
            break
        room = end - start - _CUT_KEEP
        if room <= _NOTICE_WIDTH:
            continue
        take = min(room, need + _NOTICE_WIDTH)
        mid = start + (end - start - take) // 2
        cuts.append((mid, mid + take))
        need -= take - _NOTICE_WIDTH
    out, pos = [], 0
    for start, end in sorted(cuts):
        out += [text[pos:start], CUT_NOTICE.format(n=end - start)]
        pos = end
    out.append(text[pos:])
    shorter = "".join(out)
    return shorter if spans_only else _cut_middle(shorter, limit)
