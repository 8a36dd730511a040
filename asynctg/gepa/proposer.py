"""The reflective step: new texts for a parent's components from its minibatch's feedback.

``Reflection`` is GEPA's proposer: one request per component to rewrite, with the component's
text and the adapter's reflective records in the reflection template, the new text read from
the reply's fenced block. An adapter's own ``propose_new_texts`` or a
``custom_candidate_proposer`` replaces the model call, as in gepa 0.1.4. The TextGrad proposer
(``asynctg.gepa.textgrad``) has the same ``propose`` method.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from asynctg import fanout, prompts
from asynctg.engine import Engine
from asynctg.errors import ConfigError
from asynctg.gepa.adapter import call
from asynctg.gepa.models import complete

__all__ = ["Proposer", "Reflection", "check_template", "extract_fenced"]

_FENCE = "```"
_LANG_LINE = re.compile(r"^\S*\n")


def extract_fenced(reply: str) -> str:
    """The text of the reply's fenced block: from after the first fence (and its language tag,
    if any) to the last fence; an unclosed or unopened block is taken as far as it goes."""
    text = reply.strip()
    first = text.find(_FENCE)
    last = text.rfind(_FENCE)
    if first != -1 and last > first:
        body = text[first + len(_FENCE) : last]
        tag = _LANG_LINE.match(body)
        return (body[tag.end() :] if tag else body).strip()
    if text.startswith(_FENCE):
        body = text[len(_FENCE) :]
        tag = _LANG_LINE.match(body)
        return (body[tag.end() :] if tag else body).strip()
    if text.endswith(_FENCE):
        return text[: -len(_FENCE)].strip()
    return text


def check_template(template: str | Mapping[str, str] | None) -> None:
    """Raise ``ConfigError`` when a reflection template lacks gepa's placeholders."""
    templates = template.values() if isinstance(template, Mapping) else [template]
    for text in templates:
        if text is None:
            continue
        missing = [
            p for p in (prompts.GEPA_CURRENT_TEXT, prompts.GEPA_EXAMPLES) if p not in str(text)
        ]
        if missing:
            raise ConfigError(f"reflection_prompt_template lacks {', '.join(missing)}")


class Proposer(Protocol):
    """Turns a parent, its reflective records and the names to rewrite into new texts."""

    async def propose(
        self,
        candidate: dict[str, str],
        dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components: list[str],
    ) -> dict[str, str]:
        """New text per rewritten component (may be empty: nothing to propose)."""
        ...


class Reflection:
    """GEPA's reflective proposer (see the module)."""

    def __init__(
        self,
        adapter: Any,
        engine: Engine | None,
        template: str | Mapping[str, str] | None,
        custom: Any,
        pool: concurrent.futures.ThreadPoolExecutor,
        priority: int = 1,
    ) -> None:
        check_template(template)
        self.adapter = adapter
        self.engine = engine
        self.template = template
        self.custom = custom
        self.pool = pool
        self.priority = priority
        self.own = getattr(adapter, "propose_new_texts", None)
        if self.own is not None and custom is not None:
            raise ConfigError(
                "the adapter has propose_new_texts and custom_candidate_proposer was given: "
                "use one of them"
            )
        if self.own is None and custom is None and engine is None:
            raise ConfigError(
                "reflection_lm is required: the adapter has no propose_new_texts and no "
                "custom_candidate_proposer was given"
            )

    def _template(self, name: str) -> str | None:
        if isinstance(self.template, Mapping):
            return self.template.get(name)
        return self.template

    async def _one(self, current: str, records: Sequence[Mapping[str, Any]], name: str) -> str:
        assert self.engine is not None
        prompt = prompts.gepa_reflection_prompt(current, list(records), self._template(name))
        reply = await complete(
            self.engine, [{"role": "user", "content": prompt}], priority=self.priority
        )
        return extract_fenced(reply)

    async def propose(
        self,
        candidate: dict[str, str],
        dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components: list[str],
    ) -> dict[str, str]:
        """New texts for ``components`` (those with records); one request each, together."""
        hook = self.own if self.own is not None else self.custom
        if hook is not None:
            texts = await call(hook, self.pool, dict(candidate), dataset, list(components))
            return {str(k): str(v) for k, v in dict(texts).items()}
        names = [n for n in components if dataset.get(n)]
        texts = await fanout.gather(self._one(candidate[n], dataset[n], n) for n in names)
        return dict(zip(names, texts, strict=True))
