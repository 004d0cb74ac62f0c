"""``regcred serve`` under forged load, over real TLS: half-sent bodies and too many callers.

Any Pod can reach the webhook Service. Twenty clients that send the headers of a 3 MiB review
and then only part of its body used to hold their connections (and their buffers) for good;
now each gets 408 and a closed connection once the body-read timeout passes, and the number of
admissions in progress is capped (``--limit-concurrency``): the rest get 503 at once.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import httpx

from tests.support.serve import EXAMPLES, running_serve

HOLD_LIMIT = 40.0  # seconds the reproduction saw half-sent bodies held open (and more)


def half_sent(port: int, context: ssl.SSLContext, declared: int = 3 * 1024 * 1024,
              sent: int = 1024 * 1024) -> ssl.SSLSocket:
    """A connection that declared a ``declared``-byte review and sent ``sent`` bytes of it."""
    raw = socket.create_connection(("127.0.0.1", port))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(f"POST /mutate HTTP/1.1\r\nHost: regcred\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {declared}\r\n\r\n".encode() + b'{"apiVersion": "' + b"x" * sent)
    return sock


def answer_of(sock: ssl.SSLSocket, wait: float) -> tuple[bytes, bool]:
    """What the server wrote, and whether it closed the connection, within ``wait`` seconds."""
    sock.settimeout(wait)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, False
    except (ConnectionResetError, ssl.SSLError):
        return received, True
    return received, True


def test_half_sent_bodies_get_408_and_are_closed(tmp_path) -> None:
    with running_serve(tmp_path) as (port, context, process):
        sockets = [half_sent(port, context) for _ in range(20)]
        started = time.monotonic()
        answers = [answer_of(sock, max(0.1, HOLD_LIMIT - (time.monotonic() - started))) for sock in sockets]
        assert process.poll() is None
        for received, closed in answers:
            assert received.startswith(b"HTTP/1.1 408 "), received[:100]
            assert closed
        review = json.loads((EXAMPLES / "admissionreview.json").read_text())
        genuine = httpx.post(f"https://127.0.0.1:{port}/mutate", json=review, verify=context)
        assert genuine.status_code == 200 and "patch" in genuine.json()["response"]


def test_admissions_over_the_limit_get_503_and_the_rest_carry_on(tmp_path) -> None:
    limit = 8
    with running_serve(tmp_path, "--limit-concurrency", str(limit), "--body-timeout", "30") as (port, context, _):
        held = [half_sent(port, context) for _ in range(limit - 1)]  # each accepted once its handshake is done
        # Only a little of the body: the 503 comes (and the connection closes) at the headers.
        over = half_sent(port, context, sent=16)
        received, closed = answer_of(over, 10)
        assert received.startswith(b"HTTP/1.1 503 ") and closed
        for sock in held:
            sock.close()
        review = json.loads((EXAMPLES / "admissionreview.json").read_text())
        deadline = time.monotonic() + 10
        while (status := httpx.post(f"https://127.0.0.1:{port}/mutate", json=review,
                                    verify=context).status_code) == 503 and time.monotonic() < deadline:
            time.sleep(0.1)  # the closed connections leave the server's table a moment later
        assert status == 200
