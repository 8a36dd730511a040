"""The production transport: one aiohttp session per event loop, opened lazily inside it.

An aiohttp session belongs to the loop it was opened in. An engine may outlive that loop (a
script calls ``asyncio.run`` twice; the compat layer runs its own loop in a thread), so the
session is tied to its loop with public asyncio machinery only: an async generator started
in the loop when the session opens. ``asyncio.run`` (and the compat loop) finalise every live
async generator before closing the loop (``loop.shutdown_asyncgens()``), and the generator's
``finally`` closes the session there, on its own loop. A session left on a loop still running
in another thread is closed on that loop (``run_coroutine_threadsafe``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp

from asynctg.errors import APIConnectionError, APITimeoutError, ConfigError, ResponseTooLargeError
from asynctg.transport.base import HTTPRequest, HTTPResponse

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "AiohttpTransport"]

#: A chat completion is a few KiB; anything past this is a misbehaving server, not an answer.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
#: Seconds to open a connection: an unreachable host fails in this, not in the whole timeout.
DEFAULT_CONNECT_TIMEOUT = 10.0
_CHUNK = 1 << 16
_log = logging.getLogger("asynctg.transport")


class AiohttpTransport:
    """Sends requests with one pooled ``aiohttp.ClientSession``.

    The session is created on first use, inside the running event loop (aiohttp binds it to that
    loop), and closed by ``aclose()``. The connection pool is not limited here: the engine's
    scheduler decides how many requests are in flight. Redirects are never followed: a 3xx
    comes back as it is.
    """

    __slots__ = ("_connect", "_guard", "_loop", "_max_bytes", "_session", "_timeouts")

    def __init__(
        self,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if max_response_bytes <= 0:
            raise ConfigError(f"max_response_bytes must be positive, got {max_response_bytes}")
        if not 0 < connect_timeout < float("inf"):
            raise ConfigError(f"connect_timeout must be positive seconds, got {connect_timeout}")
        self._max_bytes = max_response_bytes
        self._connect = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: AsyncGenerator[None, None] | None = None
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    async def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and not session.closed and self._loop is loop:
            return session
        if session is not None and not session.closed and self._loop is not None:
            _retire(session, self._loop)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            auto_decompress=True,
            raise_for_status=False,
        )
        guard = _close_with_loop(session)
        await guard.__anext__()  # now tracked by this loop: closed when the loop shuts down
        self._session, self._loop, self._guard = session, loop, guard
        return session

    def _timeout(self, seconds: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            connect = self._connect if seconds is None else min(self._connect, seconds)
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(
                total=seconds, sock_connect=connect
            )
        return timeout

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        """Send ``request``; the whole response body is read before returning.

        Raises ``APIConnectionError`` (no connection, or it broke), ``APITimeoutError`` (no
        full answer within ``request.timeout``, or no connection within the connect timeout)
        and ``ResponseTooLargeError`` (a body over ``max_response_bytes``).
        """
        session = await self._get_session()
        try:
            async with self._request(session, request) as resp:
                body = await self._read(resp)
                return HTTPResponse(resp.status, resp.headers, body)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _converted(exc, request) from exc

    def _request(self, session: aiohttp.ClientSession, request: HTTPRequest) -> Any:
        """The aiohttp request context of ``request`` (sent when entered)."""
        return session.request(
            request.method,
            request.url,
            data=request.body or None,
            headers=request.headers,
            timeout=self._timeout(request.timeout),
            # A redirect is handed to the engine as it came (RedirectError), never followed:
            # following one would send the prompt (and, on the same origin, the key) wherever
            # the Location says, and use that answer as the provider's.
            allow_redirects=False,
        )

    def stream(self, request: HTTPRequest) -> _Stream:
        """Send ``request`` and hold its response open while the body arrives (server-sent
        events): ``async with transport.stream(request) as response``. ``request.timeout``
        bounds the whole exchange, as for ``send``; errors are those of ``send``, raised when
        they happen (before or during the body)."""
        return _Stream(self, request)

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        length = resp.content_length
        # Content-Length counts the bytes on the wire: with a Content-Encoding (gzip, br, ...)
        # the body is decompressed as it is read and may be any size, so it is counted instead.
        encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity"
        if length is not None and not encoded:
            if length > self._max_bytes:
                raise self._too_large(f"of {length} bytes ")
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise self._too_large("")
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: str) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"response body {size}exceeds the cap of {self._max_bytes} bytes; raise it with "
            "AiohttpTransport(max_response_bytes=...) if such answers are expected"
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        guard, self._guard = self._guard, None
        if session is None or session.closed:
            return
        if self._loop is asyncio.get_running_loop() or self._loop is None:
            await session.close()
            if guard is not None:
                await guard.aclose()
        else:  # opened in another loop: close it there
            _retire(session, self._loop)

    def __repr__(self) -> str:
        state = "open" if self._session is not None and not self._session.closed else "closed"
        return f"<AiohttpTransport {state}>"


class _Stream:
    """The context of one streamed exchange (a class: cheaper than a generator-based one)."""

    __slots__ = ("_ctx", "_request", "_transport")

    def __init__(self, transport: AiohttpTransport, request: HTTPRequest) -> None:
        self._transport = transport
        self._request = request
        self._ctx: Any = None

    async def __aenter__(self) -> _Streamed:
        request = self._request
        session = await self._transport._get_session()
        try:
            self._ctx = self._transport._request(session, request)
            resp = await self._ctx.__aenter__()
        except BaseException as exc:
            raise _converted(exc, request) from exc
        return _Streamed(resp, self._transport)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self._ctx.__aexit__(exc_type, exc, tb)
        except BaseException as error:
            raise _converted(error, self._request) from error
        if exc is not None:
            ours = _converted(exc, self._request)
            if ours is not exc:
                raise ours from exc


def _converted(exc: BaseException, request: HTTPRequest) -> BaseException:
    """aiohttp's and the socket's errors as ours (others unchanged)."""
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"no answer from {request.url} within {request.timeout} s")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return APIConnectionError(
            f"connection to {request.url} failed: {exc.__class__.__name__}: {exc}"
        )
    return exc


class _Streamed:
    """An open aiohttp response as a ``StreamResponse``."""

    __slots__ = ("_resp", "_transport", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, transport: AiohttpTransport) -> None:
        self._resp = resp
        self._transport = transport
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers  # case-insensitive lookups

    def chunks(self) -> _Blocks:
        return _Blocks(self._resp, self._transport)

    def at_eof(self) -> bool:
        return bool(self._resp.content.at_eof())

    async def read(self) -> bytes:
        return await self._transport._read(self._resp)


class _Blocks:
    """The body's blocks as they arrive, at most ``max_response_bytes`` in all. A class, not
    an async generator: a reader that stops early (at ``[DONE]``) leaves nothing to finalise."""

    __slots__ = ("_content", "_limit", "_size", "_transport")

    def __init__(self, resp: aiohttp.ClientResponse, transport: AiohttpTransport) -> None:
        self._content = resp.content
        self._transport = transport
        self._limit = transport._max_bytes
        self._size = 0

    def __aiter__(self) -> _Blocks:
        return self

    async def __anext__(self) -> bytes:
        block = await self._content.readany()
        if not block:
            raise StopAsyncIteration
        self._size += len(block)
        if self._size > self._limit:
            raise self._transport._too_large("")
        return block


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Suspended until its loop shuts down (or the transport closes), then closes ``session``."""
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


def _retire(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> None:
    """Close a session left on another event loop, from outside that loop."""
    if loop.is_running() and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(session.close(), loop)
        return
    # That loop stopped without finalising its async generators (a hand-made loop closed with
    # loop.close()): nothing can run on it any more. Detach the session so it does not warn;
    # its sockets close when they are collected.
    _log.warning(
        "an asynctg engine's HTTP session outlived its event loop, which was closed without "
        "shutdown_asyncgens(); close engines with `await engine.aclose()` before the loop ends"
    )
    session.detach()
