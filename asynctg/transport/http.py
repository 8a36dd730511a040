"""The production transport: one aiohttp session, opened lazily inside the running loop."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from asynctg.errors import APIConnectionError, APITimeoutError, ConfigError, ResponseTooLargeError
from asynctg.transport.base import HTTPRequest, HTTPResponse

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "AiohttpTransport"]

#: A chat completion is a few KiB; anything past this is a misbehaving server, not an answer.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_CHUNK = 1 << 16


class AiohttpTransport:
    """Sends requests with one pooled ``aiohttp.ClientSession``.

    The session is created on first use, inside the running event loop (aiohttp binds it to that
    loop), and closed by ``aclose()``. The connection pool is not limited here: the engine's
    scheduler decides how many requests are in flight.
    """

    __slots__ = ("_loop", "_max_bytes", "_session", "_timeouts")

    def __init__(self, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        if max_response_bytes <= 0:
            raise ConfigError(f"max_response_bytes must be positive, got {max_response_bytes}")
        self._max_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            # A session belongs to the loop it was made in; a new loop (a new asyncio.run, the
            # compat layer's thread) needs its own, and the old one is closed, not leaked.
            if session is not None and not session.closed and self._loop is not None:
                _retire(session, self._loop)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                auto_decompress=True,
                raise_for_status=False,
            )
            self._session = session
            self._loop = loop
        return session

    def _timeout(self, seconds: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        session = self._get_session()
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
        if session is None or session.closed:
            return
        if self._loop is asyncio.get_running_loop() or self._loop is None:
            await session.close()
        else:  # opened in another loop: close it there, or drop it if that loop has ended
            _retire(session, self._loop)

    def __repr__(self) -> str:
        state = "open" if self._session is not None and not self._session.closed else "closed"
        return f"<AiohttpTransport {state}>"


def _retire(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> None:
    """Close a session left over from another event loop, from outside that loop."""
    if loop.is_running() and not loop.is_closed():
        # Still serving (another thread's loop): close it there, where it belongs.
        asyncio.run_coroutine_threadsafe(session.close(), loop)
        return
    # The loop has ended (a finished asyncio.run without ``aclose()``): nothing can be awaited
    # on it any more, and a closed loop can no longer close its transports, so the pooled
    # sockets are closed here directly, then the session is marked closed.
    connector = session.connector
    session.detach()
    if connector is None:
        return
    protocols = [p for pooled in connector._conns.values() for p, _ in pooled]
    protocols.extend(connector._acquired)
    for protocol in protocols:
        transport = getattr(protocol, "transport", None)
        # asyncio's own last step of closing a transport, which a closed loop cannot schedule
        # (uvloop's transports have no such step; their sockets go with the loop).
        finish = getattr(transport, "_call_connection_lost", None)
        if finish is not None and transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):
                finish(None)
    connector._close()


def _lower(headers: aiohttp.typedefs.LooseHeaders) -> dict[str, str]:
    # Only the handful of headers the client reads matter; lower-casing them once here keeps
    # lookups cheap and transport-independent.
    return {k.lower(): v for k, v in headers.items()}  # type: ignore[union-attr]
