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
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

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
    scheduler decides how many requests are in flight.
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
            async with session.request(
                request.method,
                request.url,
                data=request.body or None,
                headers=request.headers,
                timeout=self._timeout(request.timeout),
            ) as resp:
                body = await self._read(resp)
                return HTTPResponse(resp.status, _lower(resp.headers), body)
        except TimeoutError as exc:
            raise APITimeoutError(
                f"no answer from {request.url} within {request.timeout} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise APIConnectionError(
                f"connection to {request.url} failed: {exc.__class__.__name__}: {exc}"
            ) from exc

    @contextlib.asynccontextmanager
    async def stream(self, request: HTTPRequest) -> AsyncIterator[_Streamed]:
        """Send ``request`` and hold its response open while the body arrives (server-sent
        events). ``request.timeout`` bounds the whole exchange, as for ``send``; errors are
        those of ``send``, raised when they happen (before or during the body)."""
        session = await self._get_session()
        try:
            async with session.request(
                request.method,
                request.url,
                data=request.body or None,
                headers=request.headers,
                timeout=self._timeout(request.timeout),
            ) as resp:
                yield _Streamed(resp, self)
        except TimeoutError as exc:
            raise APITimeoutError(
                f"no (complete) answer from {request.url} within {request.timeout} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise APIConnectionError(
                f"connection to {request.url} failed: {exc.__class__.__name__}: {exc}"
            ) from exc

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


class _Streamed:
    """An open aiohttp response as a ``StreamResponse``."""

    __slots__ = ("_resp", "_transport", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, transport: AiohttpTransport) -> None:
        self._resp = resp
        self._transport = transport
        self.status = resp.status
        self.headers: Mapping[str, str] = _lower(resp.headers)

    async def lines(self) -> AsyncIterator[bytes]:
        size = 0
        limit = self._transport._max_bytes
        async for line in self._resp.content:
            size += len(line)
            if size > limit:
                raise self._transport._too_large("")
            yield line

    async def read(self) -> bytes:
        return await self._transport._read(self._resp)


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


def _lower(headers: aiohttp.typedefs.LooseHeaders) -> dict[str, str]:
    # Only the handful of headers the client reads matter; lower-casing them once here keeps
    # lookups cheap and transport-independent.
    return {k.lower(): v for k, v in headers.items()}  # type: ignore[union-attr]
