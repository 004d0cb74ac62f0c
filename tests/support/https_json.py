"""A threaded HTTPS server on 127.0.0.1 answering JSON: the test stand-ins' common transport.

Each request goes to ``route(method, path, params, headers)``: the query string's or the form
body's parameters as a dict. It answers ``(status, payload)``, or None to close the connection
unanswered (an outage). The certificate is issued by the caller's trustme CA.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme

Answer = tuple[int, dict]


class HttpsJson:
    """A threaded HTTPS server handing each request to ``route(method, path, form, headers)``."""

    def __init__(self, ca: trustme.CA, route: Callable[[str, str, dict, dict], Answer | None]):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.route = route  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self._answer(self.server.route("GET", path, dict(urllib.parse.parse_qsl(query)), dict(self.headers)))  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self._answer(self.server.route("POST", self.path, dict(urllib.parse.parse_qsl(body)), dict(self.headers)))  # type: ignore[attr-defined]

    def _answer(self, answer: Answer | None) -> None:
        if answer is None:  # an outage that drops the connection unanswered
            self.close_connection = True
            return
        status, payload = answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass
