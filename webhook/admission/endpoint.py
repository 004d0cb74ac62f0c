"""POST /mutate: the HTTP edge of admission.

Two error channels. A malformed call (not JSON, wrong Content-Type, wrong kind or
apiVersion, no request or uid, too large) gets an HTTP 4xx with a one-line reason. A
well-formed review is always answered ``allowed: true``; if regcred fails inside, the Pod
gets a warning instead of our Secrets, and the failure goes to the log and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from webhook.admission.models import AdmissionReview, BadReview, allowed_response, decode_review, encode
from webhook.decision import Admitter, Decision
from webhook.metrics import Metrics

log = logging.getLogger(__name__)

_INTERNAL_WARNING = "regcred: internal error; pull secrets were not added"


class MutateEndpoint:
    def __init__(self, admitter: Admitter, metrics: Metrics, *, max_body_bytes: int, body_timeout: float = 5.0):
        self._admitter = admitter
        self._metrics = metrics
        self._max_body = max_body_bytes
        self._body_timeout = body_timeout
        self._results: dict[str, Counter] = {}

    async def handle(self, request: Request) -> Response:
        try:
            body = await self._body(request)
        except _BadRequest as exc:
            status, content = self._refuse(exc)
        else:
            status, content = await self.answer(body)
        if status == 408:  # the rest of the body may still come: only closing ends it
            return PlainTextResponse(content, status_code=status, headers={"connection": "close"})
        if status != 200:
            return PlainTextResponse(content, status_code=status)
        return Response(content, media_type="application/json")

    async def answer(self, body: bytes | bytearray) -> tuple[int, bytes]:
        """The whole admission from request body to response body, without HTTP: (status, content).

        A 4xx comes with a one-line reason as content; a 200 with the encoded AdmissionReview.
        """
        started = time.perf_counter()
        try:
            review = _decode(body)
        except _BadRequest as exc:
            return self._refuse(exc)
        decision = await self._decide(review)
        answer = allowed_response(review.api_version, review.request.uid, decision.patch, decision.warnings)
        counter = self._results.get(decision.result)
        if counter is None:  # a handful of results; labels() costs ~6 us a call
            counter = self._results[decision.result] = self._metrics.admission_requests.labels(decision.result)
        counter.inc()
        self._metrics.admission_duration.observe(time.perf_counter() - started)
        return 200, encode(answer)

    def _refuse(self, exc: _BadRequest) -> tuple[int, bytes]:
        self._metrics.admission_requests.labels("invalid").inc()
        log.warning("malformed admission call", extra={"reason": exc.reason, "status": exc.status})
        return exc.status, (exc.reason + "\n").encode()

    async def _decide(self, review: AdmissionReview) -> Decision:
        try:
            return await self._admitter.admit(review.request)
        except Exception:
            log.exception("admission failed; allowing the Pod unchanged", extra={"uid": review.request.uid})
            self._metrics.admission_warnings.labels("internal").inc()
            return Decision("error", [], [_INTERNAL_WARNING])

    async def _body(self, request: Request) -> bytearray:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _BadRequest(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise _BadRequest(413, f"body larger than {self._max_body} bytes")
        body = bytearray()
        try:
            # A forged caller sending half a body held its connection and buffer for good.
            async with asyncio.timeout(self._body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > self._max_body:
                        raise _BadRequest(413, f"body larger than {self._max_body} bytes")
        except TimeoutError:
            raise _BadRequest(408, f"body not received within {self._body_timeout:g} s") from None
        return body  # msgspec decodes a bytearray as is: no copy of up to max_body_bytes


def _decode(body: bytes | bytearray) -> AdmissionReview:
    try:
        return decode_review(body)
    except BadReview as exc:
        raise _BadRequest(400, str(exc)[:200]) from None


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def health(_: Request) -> Response:
    return PlainTextResponse("ok\n")
