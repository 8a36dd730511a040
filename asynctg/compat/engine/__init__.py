"""TextGrad's engine API, blocking: ``tg.get_engine(name)``, ``engine.generate(prompt)``.

Every engine here is asynctg's one OpenAI-compatible ``ChatEngine`` underneath, so every call
goes through one scheduler (budgets, retries, priorities) on the compat layer's private loop.
``get_engine`` routes TextGrad's names as TextGrad does, each to the OpenAI-compatible endpoint
of its provider:

==========================  =====================================================================
name                        endpoint (key)
==========================  =====================================================================
``gpt-4...``, ``gpt-3.5..`` ``OPENAI_BASE_URL``, else OpenAI (``OPENAI_API_KEY``); disk-cached
``experimental:MODEL``      ``OPENAI_BASE_URL``, else OpenAI (``OPENAI_API_KEY``); ``cache=``
``azure-MODEL``             ``AZURE_OPENAI_ENDPOINT``/openai/v1 (``AZURE_OPENAI_API_KEY``)
``ollama-MODEL``            ``OLLAMA_BASE_URL``, else http://localhost:11434/v1 (no key)
``vllm-MODEL``              ``VLLM_BASE_URL``, else http://localhost:8000/v1
``together-MODEL``          Together's API (``TOGETHER_API_KEY``)
``groq-MODEL``              Groq's OpenAI-compatible API (``GROQ_API_KEY``)
``claude...``               Anthropic's OpenAI-compatible API (``ANTHROPIC_API_KEY``)
``gemini...``               Google's OpenAI-compatible API (``GEMINI_API_KEY``)
``command-r...``            Cohere's compatibility API (``COHERE_API_KEY``)
==========================  =====================================================================

Any other name is a ``ValueError``, as in TextGrad, unless ``base_url=`` is given (then any
model name goes to that endpoint). A custom engine, a class deriving from ``EngineLM`` or any
object with ``generate(prompt, system_prompt=None, **kwargs)``, can be passed wherever an engine
is taken: it is scheduled like the others, its blocking calls run in a thread pool so a batch's
calls overlap (``asynctg.engine.adapters``).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asynctg.compat._loop import close_soon, run, track_engine
from asynctg.compat.engine.base import DEFAULT_SYSTEM_PROMPT, CachedEngine, EngineLM
from asynctg.engine.adapters import as_chat_engine
from asynctg.engine.cache import ResponseCache
from asynctg.engine.client import ChatEngine
from asynctg.engine.client import get_engine as _native_get_engine
from asynctg.engine.usage import UsageStats
from asynctg.errors import ConfigError

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "CachedEngine",
    "Engine",
    "EngineLM",
    "LiteLLMEngine",
    "cache_dir",
    "get_engine",
    "native_engine",
    "set_backward_engine",
    "validate_multimodal_engine",
]

#: TextGrad's shortcuts, expanded before routing.
SHORTCUTS = {
    "opus": "claude-3-opus-20240229",
    "haiku": "claude-3-haiku-20240307",
    "sonnet": "claude-3-sonnet-20240229",
    "sonnet-3.5": "claude-3-5-sonnet-20240620",
    "together-llama-3-70b": "together-meta-llama/Llama-3-70b-chat-hf",
    "vllm-llama-3-8b": "vllm-meta-llama/Meta-Llama-3-8B-Instruct",
}
#: The models TextGrad treats as multimodal.
MULTIMODAL = (
    "gpt-4-turbo",
    "gpt-4o",
    "claude-3-5-sonnet-20240620",
    "claude-3-opus-20240229",
    "claude-3-sonnet-20240229",
    "claude-3-haiku-20240307",
    "gpt-4-turbo-2024-04-09",
)
OLLAMA_BASE_URL = "http://localhost:11434/v1"


def cache_dir() -> Path:
    """Where compat engines keep their response caches: ``$ASYNCTG_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/asynctg/compat``, else ``~/.cache/asynctg/compat``."""
    explicit = os.environ.get("ASYNCTG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "asynctg" / "compat"


def _cache_for(cache: Any, name: str) -> Any:
    """TextGrad's ``cache`` argument as an engine cache: None, a path's cache, or diskcache."""
    if cache is False or cache is None:
        return None
    if cache is True:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return ResponseCache(folder / f"cache_{safe}.bin")
    if isinstance(cache, str | os.PathLike):
        return ResponseCache(cache)
    if type(cache).__module__.startswith("diskcache"):
        from asynctg.compat.engine.base import DiskCacheStore

        return DiskCacheStore(cache)
    raise ValueError(
        f"cache must be True, False, a path or a diskcache.Cache, got {type(cache).__name__}"
    )


class Engine(EngineLM):
    """A chat engine with TextGrad's blocking interface (an ``EngineLM``).

    >>> # engine = tg.get_engine("gpt-4o")
    >>> # engine.generate("What is 2+2?", system_prompt="Be brief.")  -> '4'

    ``native`` is the asynctg ``ChatEngine`` underneath (its ``stats()`` and ``usage`` are here
    too). ``system_prompt`` is sent when ``generate`` is given none, as TextGrad's engines do.
    """

    def __init__(
        self,
        native: ChatEngine,
        system_prompt: str | None = None,
        *,
        owned: bool = False,
        is_multimodal: bool | None = None,
    ) -> None:
        if not isinstance(native, ChatEngine):
            raise ConfigError(
                f"Engine wraps an asynctg ChatEngine, got {type(native).__name__}; "
                "use tg.get_engine('model-name')"
            )
        self.native = track_engine(native)
        self.system_prompt = system_prompt  # type: ignore[assignment]
        if is_multimodal is not None:
            native.multimodal = is_multimodal
        if owned:
            # TextGrad scripts never close engines: one made here closes its HTTP session when
            # it is dropped (else at exit), instead of leaking it.
            weakref.finalize(self, close_soon, native)

    @property  # type: ignore[override]
    def model_string(self) -> str:
        """The model name, under TextGrad's attribute name (settable, as in TextGrad)."""
        return self.native.model

    @model_string.setter
    def model_string(self, value: str) -> None:
        self.native.model = value

    @property
    def is_multimodal(self) -> bool:
        """Whether image parts may be sent (TextGrad's ``engine.is_multimodal``)."""
        return self.native.multimodal

    @is_multimodal.setter
    def is_multimodal(self, value: bool) -> None:
        self.native.multimodal = bool(value)

    @property
    def base_url(self) -> str:
        return self.native.base_url

    def generate(  # type: ignore[override]
        self, content: str | Sequence[Any], system_prompt: str | None = None, **kwargs: Any
    ) -> str:
        """One chat call (text, or a list of text and image bytes) -> the reply text; blocks."""
        if system_prompt is None:
            system_prompt = self.system_prompt
        return run(self.native.generate(content, system_prompt, **kwargs))

    def __call__(self, content: str | Sequence[Any], **kwargs: Any) -> str:
        """``engine(prompt, system_prompt=...)`` is ``engine.generate(...)``, as in TextGrad."""
        return self.generate(content, **kwargs)

    def stats(self) -> dict[str, Any]:
        """Calls, retries, 429s, tokens, cache hits and cost so far (see ``ChatEngine.stats``)."""
        return self.native.stats()

    @property
    def usage(self) -> UsageStats:
        """The native engine's running counters."""
        return self.native.usage

    def close(self) -> None:
        """Close the HTTP session now (it is also closed at exit); reopened if used again."""
        run(self.native.aclose())

    def __repr__(self) -> str:
        return f"<compat {type(self).__name__} {self.native.model!r} at {self.native.base_url}>"


def make_native(
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    cache: Any = None,
    **options: Any,
) -> ChatEngine:
    """A native engine for a compat one: OpenAI's API when nothing says otherwise (TextGrad's
    clients do the same), so constructing never fails for want of a URL."""
    if base_url is None and not os.environ.get("OPENAI_BASE_URL") and not api_key:
        api_key = os.environ.get("OPENAI_API_KEY") or None
        if api_key is None:
            base_url = "https://api.openai.com/v1"
    store = _cache_for(cache, model)
    if store is not None:
        options.setdefault("cache_sampled", True)  # TextGrad caches every reply
    return _native_get_engine(model, base_url=base_url, api_key=api_key, cache=store, **options)


def _provider(name: str) -> tuple[str, str | None, str | None]:
    """(model, base URL, API key) for TextGrad's routing prefixes; ValueError if unknown."""
    env = os.environ.get
    if name.startswith("azure"):
        endpoint = (env("AZURE_OPENAI_ENDPOINT") or "").rstrip("/")
        return name[6:], f"{endpoint}/openai/v1" if endpoint else None, env("AZURE_OPENAI_API_KEY")
    if name.startswith("ollama"):
        return name.replace("ollama-", "", 1), env("OLLAMA_BASE_URL") or OLLAMA_BASE_URL, "ollama"
    if "vllm" in name:
        url = env("VLLM_BASE_URL") or "http://localhost:8000/v1"
        return name.replace("vllm-", "", 1), url, env("VLLM_API_KEY") or "vllm"
    if "together" in name:
        return (
            name.replace("together-", "", 1),
            "https://api.together.xyz/v1",
            env("TOGETHER_API_KEY"),
        )
    if "groq" in name:
        return name.replace("groq-", "", 1), "https://api.groq.com/openai/v1", env("GROQ_API_KEY")
    if "claude" in name:
        return name, "https://api.anthropic.com/v1", env("ANTHROPIC_API_KEY")
    if "gemini" in name:
        url = "https://generativelanguage.googleapis.com/v1beta/openai"
        return name, url, env("GEMINI_API_KEY") or env("GOOGLE_API_KEY")
    if name in ("command-r-plus", "command-r", "command", "command-light"):
        return name, "https://api.cohere.ai/compatibility/v1", env("COHERE_API_KEY")
    raise ValueError(f"Engine {name} not supported")


def get_engine(engine_name: str, **kwargs: Any) -> Engine:
    """TextGrad's ``get_engine``: route ``engine_name`` to its provider (see the module).

    ``base_url`` / ``api_key`` and every option of ``asynctg.get_engine`` (``rpm``, ``tpm``,
    ``max_concurrency``, ...) are accepted, plus ``system_prompt``. ``cache`` (``True``,
    ``False``, a path or a ``diskcache.Cache``) is taken by ``experimental:`` engines (as in
    TextGrad) and with an explicit ``base_url``; OpenAI engines cache on disk by default, as
    TextGrad's do.
    """
    from asynctg.compat.engine.openai import ChatOpenAI

    name = SHORTCUTS.get(engine_name, engine_name)
    if "seed" in kwargs and not any(k in name for k in ("gpt-4", "gpt-3.5", "gpt-35")):
        if "base_url" not in kwargs:
            raise ValueError(f"Seed is currently supported only for OpenAI engines, not {name}")
    if "cache" in kwargs and "experimental" not in name and "base_url" not in kwargs:
        raise ValueError(f"Cache is currently supported only for LiteLLM engines, not {name}")
    if name.startswith("experimental:"):
        from asynctg.compat.engine_experimental.litellm import LiteLLMEngine

        return LiteLLMEngine(model_string=name.split("experimental:", 1)[1], **kwargs)
    if (
        "gpt-4" in name
        or "gpt-3.5" in name
        or ("base_url" in kwargs and not name.startswith("azure"))
    ):
        return ChatOpenAI(model_string=name, is_multimodal=name in MULTIMODAL, **kwargs)
    model, base_url, api_key = _provider(name)
    kwargs.setdefault("base_url", base_url)
    if api_key is not None:
        kwargs.setdefault("api_key", api_key)
    return ChatOpenAI(model_string=model, is_multimodal=name in MULTIMODAL, **kwargs)


def validate_multimodal_engine(engine: Any) -> None:
    """ValueError unless ``engine`` takes images (TextGrad's check, by model name)."""
    multimodal = getattr(engine, "is_multimodal", None)
    if multimodal is False or (
        multimodal is None and getattr(engine, "model_string", "") not in MULTIMODAL
    ):
        raise ValueError(
            "The engine provided is not multimodal. Please provide a multimodal engine, one "
            f"of the following: {list(MULTIMODAL)}"
        )


def native_engine(engine: Any) -> ChatEngine | None:
    """The asynctg engine behind ``engine``: a compat engine's, a native one, a model name's
    new engine, or a custom engine (anything with ``generate``) wrapped; None stays None."""
    if engine is None:
        return None
    if isinstance(engine, Engine):
        return engine.native
    if isinstance(engine, ChatEngine):
        return track_engine(engine)
    if isinstance(engine, str):
        return get_engine(engine).native
    try:
        return track_engine(as_chat_engine(engine))
    except ConfigError:
        raise ConfigError(
            f"expected an engine: tg.get_engine(...), a model name, or an object with "
            f"generate(prompt, system_prompt=None), got {type(engine).__name__}"
        ) from None


def set_backward_engine(engine: Any, override: bool = False, **kwargs: Any) -> None:
    """TextGrad's ``tg.set_backward_engine`` (see ``asynctg.compat.config``)."""
    from asynctg.compat.config import set_backward_engine as _set

    _set(engine, override=override, **kwargs)


# TextGrad's engine package re-exports the experimental LiteLLM engine, which builds on Engine.
from asynctg.compat.engine_experimental.litellm import LiteLLMEngine  # noqa: E402
