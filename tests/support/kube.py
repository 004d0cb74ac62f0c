"""Helpers for tests that drive regcred's Kubernetes code against the fake API server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable

from webhook.kube.client import TRANSPORT_RETRIES, KubeClient

# Short enough that an injected hang fails fast, long enough for a loaded CI machine.
REQUEST_TIMEOUT = 1.0


def kube_client(server, **options) -> KubeClient:
    """A KubeClient on the fake; unlimited rate unless the test asks for one."""
    options.setdefault("qps", 0)
    options.setdefault("request_timeout", REQUEST_TIMEOUT)
    # The transport retries regcred configures (load_api_client): Retry-After is KubeClient's job.
    return KubeClient(server.api_client(retries=TRANSPORT_RETRIES), **options)


async def eventually(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` on the event loop until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def credentials_secret(name: str, username: str, password: str) -> dict:
    return {"metadata": {"name": name}, "data": {"username": b64(username), "password": b64(password)}}


def auths(secret: dict) -> dict:
    """The decoded ``auths`` of a dockerconfigjson Secret."""
    return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
