"""An ``openai`` client's settings, carried over to asynctg's engine (``ChatExternalClient``,
``OpenAICompatibleEngine``).

The calls do not go through the client: asynctg's engine sends them (one scheduler, budgets,
retries, cache). What the client carries goes with every request: its base URL, its credential
(``Authorization: Bearer`` for OpenAI clients, ``api-key`` or an Azure AD token for Azure
ones), its default headers (``default_headers=``, plus the ``User-Agent`` and ``X-Stainless-*``
headers the SDK adds) and default query (``default_query=``; Azure's ``api-version``), and its
timeout (a number, or an ``httpx.Timeout``'s read timeout). An ``AzureOpenAI`` client without
``azure_deployment`` sends to ``deployments/<model>``, as the SDK does.

Not carried, and why: the client's ``max_retries`` (asynctg's retry policy applies instead), a
custom ``http_client`` (proxies, certificates: asynctg opens its own HTTP session), and an Azure
AD token *provider* (a callable asynctg cannot call per request; a ``ConfigError`` says so).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlencode

from asynctg.errors import ConfigError
from asynctg.transport import AiohttpTransport, HTTPRequest, HTTPResponse, Transport

__all__ = ["ClientTransport", "engine_options"]

#: Headers the engine sets itself (the body is always JSON).
_ENGINE_OWNED = {"content-type", "accept", "content-length"}


class ClientTransport:
    """A transport that adds a client's headers and query string to every request."""

    def __init__(
        self,
        headers: dict[str, str],
        query: dict[str, str],
        secret: dict[str, str],
        inner: Transport | None = None,
    ) -> None:
        self._headers = {k.lower(): v for k, v in headers.items()}
        self._secret = {k.lower(): v for k, v in secret.items()}
        self._query = urlencode(query)
        self.inner: Any = inner or AiohttpTransport()

    def __repr__(self) -> str:  # the credential never shows
        return f"<ClientTransport headers={sorted(self._headers)} query={self._query!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("a ClientTransport holds a credential and is not pickled")

    def adapt(self, request: HTTPRequest) -> HTTPRequest:
        """``request`` with the client's headers (they win over the engine's) and query."""
        names = set(self._headers) | set(self._secret)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in names}
        headers.update(self._headers)
        headers.update(self._secret)
        url = request.url
        if self._query:
            url += ("&" if "?" in url else "?") + self._query
        return HTTPRequest(
            request.method, url, headers=headers, body=request.body, timeout=request.timeout
        )

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        response: HTTPResponse = await self.inner.send(self.adapt(request))
        return response

    def stream(self, request: HTTPRequest) -> AbstractAsyncContextManager[Any]:
        stream: AbstractAsyncContextManager[Any] = self.inner.stream(self.adapt(request))
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


def _timeout(client: Any) -> float | None:
    value = getattr(client, "timeout", None)
    if isinstance(value, int | float) and value > 0:
        return float(value)
    read = getattr(value, "read", None)  # httpx.Timeout
    if isinstance(read, int | float) and read > 0:
        return float(read)
    return None


def engine_options(client: Any, model: str) -> dict[str, Any]:
    """``base_url``, ``api_key`` (empty: the credential travels in the transport), ``transport``
    and ``timeout`` for an engine that sends what ``client`` would (see the module)."""
    base_url = str(getattr(client, "base_url", "") or "").rstrip("/")
    if not base_url:
        raise ConfigError(f"the client has no base_url: {type(client).__name__}")
    is_azure = any(c.__name__ == "AzureOpenAI" for c in type(client).__mro__)
    if is_azure and "/deployments/" not in base_url + "/":
        base_url += f"/deployments/{model}"
    secret = {str(k): str(v) for k, v in dict(getattr(client, "auth_headers", {}) or {}).items()}
    if is_azure and not secret:
        raise ConfigError(
            "this AzureOpenAI client authenticates with an Azure AD token provider, which "
            "asynctg cannot call per request; give the client api_key= or azure_ad_token="
        )
    headers = {
        str(k): v
        for k, v in dict(getattr(client, "default_headers", {}) or {}).items()
        if isinstance(v, str) and str(k).lower() not in _ENGINE_OWNED
    }
    query = {
        str(k): str(v)
        for k, v in dict(getattr(client, "default_query", {}) or {}).items()
        if isinstance(v, str | int | float)
    }
    options: dict[str, Any] = {
        "base_url": base_url,
        "api_key": "",  # no Bearer header from the engine (or from OPENAI_API_KEY)
        "transport": ClientTransport(headers, query, secret),
    }
    timeout = _timeout(client)
    if timeout is not None:
        options["timeout"] = timeout
    return options
