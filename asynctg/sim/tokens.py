"""A simple, deterministic token estimate (no tokenizer dependency).

The simulator needs token counts for usage reports, tokens-per-minute budgets, quotas and context
windows. Exactness does not matter, determinism and speed do: about four characters per token,
four tokens of framing per message, and a fixed 85 per image (OpenAI's "low detail" price).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "estimate_tokens",
    "message_text",
    "prompt_tokens",
]

MESSAGE_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 85


def estimate_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``: the usual rule of thumb for English text."""
    return (len(text) + 3) // 4


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_tokens(messages: Sequence[Any]) -> int:
    """Estimated prompt tokens of a chat request's ``messages``, validating their shape.

    Raises :class:`ValueError` with a client-facing message if a message is not an object
    with a string ``role`` and a ``content`` that is a string, a list of parts, or null.
    """
    total = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}] must be an object with 'role' and 'content'")
        if not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{i}].role must be a string")
        content = message.get("content")
        total += MESSAGE_OVERHEAD_TOKENS
        if isinstance(content, str):
            total += (len(content) + 3) // 4
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise ValueError(f"messages[{i}].content[{j}] must be an object with 'type'")
                kind = part["type"]
                if kind == "text":
                    text = part.get("text")
                    if not isinstance(text, str):
                        raise ValueError(f"messages[{i}].content[{j}].text must be a string")
                    total += (len(text) + 3) // 4
                elif kind == "image_url":
                    total += IMAGE_TOKENS
                # other part kinds (audio, files) are accepted and not counted
        elif content is not None:
            raise ValueError(
                f"messages[{i}].content must be a string, a list of content parts, or null"
            )
    return total
