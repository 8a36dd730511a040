"""The one-method layer under the engine: send an HTTP request, get the whole response back.

``AiohttpTransport`` talks to real servers; ``MockTransport(handler)`` answers in memory so unit
tests run the real client, scheduler and retries on top of it. A transport raises only
``APIConnectionError`` / ``APITimeoutError`` (for anything that kept a full response from
arriving) and returns every HTTP status, good or bad, as an ``HTTPResponse``: what a status means
is the client's business, not the transport's. Transports that also implement ``stream``
(both here do) hold a response open while its body arrives, for ``engine.stream``.
"""

from asynctg.transport.base import (
    HTTPRequest,
    HTTPResponse,
    StreamingTransport,
    StreamResponse,
    Transport,
)
from asynctg.transport.http import AiohttpTransport
from asynctg.transport.memory import MockTransport

__all__ = [
    "AiohttpTransport",
    "HTTPRequest",
    "HTTPResponse",
    "MockTransport",
    "StreamResponse",
    "StreamingTransport",
    "Transport",
]
