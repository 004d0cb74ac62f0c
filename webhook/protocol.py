"""The HTTP/1.1 protocol of every regcred listener: uvicorn's httptools one, with a bounded head.

httptools (llhttp, in C) parses a request for far less CPU than h11, uvicorn's pure-Python
default: the no-op baseline of bench/README.md's warm path costs ~260 us of server CPU a
request instead of ~450, and a 1,000-admission cold burst is answered ~0.2 s sooner.

h11 refuses a request head (request line and headers) over 16 KiB. llhttp has no such limit,
and uvicorn sets none: a client sending one endless header grew the server by 2 MB per MB sent.
``BoundedHttpToolsProtocol`` restores h11's bound, answering 431 and closing the connection.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# h11's default (uvicorn's h11_max_incomplete_event_size): far above any head the API server
# or a CI client sends, small enough that a thousand open connections cannot exhaust memory.
MAX_HEAD_BYTES = 16 * 1024

_REASON = f"request head over {MAX_HEAD_BYTES} bytes\n".encode()
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
              b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_REASON), _REASON))


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Counts the bytes received while a request head is incomplete; over MAX_HEAD_BYTES the
    connection gets a 431 and is closed. The count restarts with each request on a keep-alive
    connection, so the bound is per request, as h11's is."""

    # uvicorn narrows BaseProtocol's BaseTransport to Transport; this override keeps uvicorn's.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._in_head, self._head_bytes = True, 0
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()
