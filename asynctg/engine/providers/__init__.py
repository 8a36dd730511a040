"""Provider adapters: everything one provider's wire format decides, behind one small protocol.

The engine (``asynctg.engine.client``) is written once: budgets, retries, the cache and
journal, single-flight, usage and telemetry. What differs between providers lives in an
adapter, a stateless object of pure functions:

=================================  =========================================================
``name``                           the provider's name (``"openai"``, ``"anthropic"``)
``defaults``                       sampling parameters every request gets unless the engine
                                   or the request sets them (Anthropic: ``max_tokens``)
``url(base_url)``                  where a chat request goes
``headers(api_key)``               the request headers (the key as the provider wants it)
``body(request, stream=)``         a ``ChatRequest`` as the provider's JSON body
``parse(response)``                a 200 answer as a ``ChatResult`` (``ResponseParseError``
                                   if it is not one)
``decoder()``                      a fresh ``StreamDecoder`` for one streamed answer
``error(response, site)``          a non-200 answer as an ``ErrorReport``: the typed error
                                   from ``asynctg.errors``, the wait it asks for, and a context
                                   window it names (learned data: the engine decides to keep
                                   it; building the error changes nothing)
``rate_limits(headers)``           the answer's rate-limit headers in the scheduler's
                                   vocabulary (``x-ratelimit-limit-requests`` / ``-tokens``
                                   / ``-input-tokens`` / ``-output-tokens`` and
                                   ``x-ratelimit-remaining-*``), for limit learning
``system(base_url)``               ``gen_ai.provider.name`` for telemetry
=================================  =========================================================

A ``StreamDecoder`` takes the body of a streamed answer as it arrives (``feed(block)`` returns
the text deltas of the complete events in it), says when the stream is ``done``, whether the
server sent a ``plain`` (unstreamed) answer instead (``body()`` is then that answer, for
``parse``), and builds the whole ``ChatResult`` at the end (``result(request, request_id)``,
with whether the usage was estimated because the server reported none).

Adding a provider: write ``asynctg/engine/providers/NAME.py`` with an object implementing
``Provider`` (and its ``StreamDecoder``), and add it to the table in ``provider()``; the
engine picks it by ``get_engine(..., provider=NAME)``. Nothing above this
package changes. Two adapters today: ``openai`` (chat completions, which most
OpenAI-compatible servers speak) and ``anthropic`` (the Messages API, ``anthropic.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from asynctg.engine.types import ChatRequest, ChatResult
from asynctg.errors import APIStatusError
from asynctg.transport import HTTPResponse

__all__ = [
    "CallSite",
    "ErrorReport",
    "Provider",
    "SecretHeaders",
    "StreamDecoder",
    "provider",
]


#: the headers that carry an API key (OpenAI's bearer token, Anthropic's x-api-key)
_KEY_HEADERS = frozenset({"authorization", "x-api-key"})


class SecretHeaders(dict[str, str]):
    """Request headers whose key (``authorization``, ``x-api-key``) never shows (``repr``,
    ``vars(engine)``, logs) and never pickles: a copied or pickled engine has no key, not a
    leaked one."""

    def __repr__(self) -> str:
        return repr({k: ("***" if k in _KEY_HEADERS else v) for k, v in self.items()})

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretHeaders, ({k: v for k, v in self.items() if k not in _KEY_HEADERS},))


@dataclass(frozen=True, slots=True)
class CallSite:
    """What an error message names about the call: where it went, which model, whether a key
    was sent (for the hint a 401 gives)."""

    url: str
    model: str
    has_key: bool


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """A non-200 answer, read: the error to raise (or retry), the wait the provider asked for
    (seconds, None: none), and the context window it named (tokens, None: none)."""

    error: APIStatusError
    retry_after: float | None = None
    context_window: int | None = None


class StreamDecoder(Protocol):
    """Reads one streamed answer (see the package docstring)."""

    done: bool
    plain: bool | None

    def feed(self, block: bytes) -> list[str]: ...

    def body(self) -> bytes: ...

    def result(self, request: ChatRequest, request_id: str | None) -> tuple[ChatResult, bool]: ...


class Provider(Protocol):
    """A provider's wire format (see the package docstring)."""

    name: str
    defaults: Mapping[str, Any]

    def url(self, base_url: str) -> str: ...

    def headers(self, api_key: str | None) -> dict[str, str]: ...

    def body(self, request: ChatRequest, *, stream: bool) -> bytes: ...

    def parse(self, response: HTTPResponse) -> ChatResult: ...

    def decoder(self) -> StreamDecoder: ...

    def error(self, response: HTTPResponse, site: CallSite) -> ErrorReport: ...

    def rate_limits(self, headers: Mapping[str, str]) -> Mapping[str, str]: ...

    def system(self, base_url: str) -> str: ...


def provider(name: str, *, prompt_cache: bool = True) -> Provider:
    """The adapter named ``name`` (``ConfigError`` for one there is none of); ``prompt_cache``
    is whether it marks prompt-cache breakpoints, for providers whose caching is explicit."""
    from asynctg.engine.providers.anthropic import ANTHROPIC, AnthropicMessages
    from asynctg.engine.providers.openai import OPENAI
    from asynctg.errors import ConfigError

    providers: dict[str, Provider] = {
        "openai": OPENAI,
        "anthropic": ANTHROPIC if prompt_cache else AnthropicMessages(prompt_cache=False),
    }
    try:
        return providers[name]
    except KeyError:
        raise ConfigError(
            f"provider must be one of {', '.join(sorted(providers))}, got {name!r}"
        ) from None
