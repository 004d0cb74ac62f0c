"""A stand-in for AWS: moto's server behind a small recording front.

The ECR provider talks to it over real HTTP, pointed there only through boto3's standard
``AWS_ENDPOINT_URL``. The front, a few dozen lines between boto3 and moto, adds what moto
cannot do:

* it records every call (operation, SigV4 signing region and service, access key id), so a
  test can tell which identity signed for which region;
* it rewrites ECR ``GetAuthorizationToken`` answers, whose ``expiresAt`` moto pins to
  2015-01-01, to ``now + token_lifetime`` (12 hours, as AWS does); ``token_lifetime = None``
  passes moto's already-expired answer through;
* it answers ECR Public's ``GetAuthorizationToken`` itself (moto 5 has no ecr-public);
* it injects AWS error answers (``fail``) and arbitrary JSON answers (``respond``);
* it plays an outage (``outage``): every call dropped unanswered, or answered 503;
* it serves an EKS Pod Identity agent's credentials endpoint (``pod_identity_url``).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from moto.server import ThreadedMotoServer

from tests.support.sensitive import register

TWELVE_HOURS = 12 * 3600.0
MOTO_EXPIRES_AT = 1420070400.0  # 2015-01-01T00:00:00Z, what moto always answers
POD_IDENTITY_KEY_ID = "ASIAPODIDENTITYKEY01"
_POD_IDENTITY_PATH = "/v1/pod-identity-credentials"
_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
# Material in STS answers (query protocol, XML); registered for the secret-hygiene check.
_STS_SECRETS = re.compile(r"<(SecretAccessKey|SessionToken)>([^<]+)</")
_HOP_BY_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}
# Variables that would let a developer's own AWS set-up leak into a test.
_AMBIENT = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_ECR_PUBLIC",
    "AWS_USE_FIPS_ENDPOINT", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
)


@dataclass(frozen=True)
class AwsCall:
    operation: str  # GetAuthorizationToken, AssumeRole, AssumeRoleWithWebIdentity, ...
    service: str | None  # SigV4 signing name (ecr, ecr-public, sts); None when unsigned
    region: str | None
    access_key_id: str | None
    session_token: bool  # an X-Amz-Security-Token header was sent
    params: dict[str, str] = field(default_factory=dict)  # query-protocol (STS) parameters


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str


class AwsFake:
    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self.token_lifetime: float | None = TWELVE_HOURS
        # None: serving. "drop": every call's connection closed unanswered (AWS unreachable
        # mid-request). "unavailable": every call answered 503 ServiceUnavailableException.
        self.outage: str | None = None
        self._answers: dict[str, list[_Answer]] = {}
        self._lock = threading.Lock()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._front: ThreadingHTTPServer | None = None

    def start(self) -> AwsFake:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise
        self._moto.start()
        self._front = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._front.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=self._front.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._front is not None:
            self._front.shutdown()
            self._front.server_close()
        self._moto.stop()

    @property
    def url(self) -> str:
        assert self._front is not None, "start() first"
        return f"http://127.0.0.1:{self._front.server_address[1]}"

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._answers.clear()
        self.token_lifetime = TWELVE_HOURS
        self.outage = None

    @property
    def pod_identity_url(self) -> str:
        """Point ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` here, as the EKS Pod Identity agent does."""
        return f"{self.url}{_POD_IDENTITY_PATH}"

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]

    def fail(self, operation: str, code: str, *, status: int = 400, message: str = "denied") -> None:
        """Answer the next ``operation`` call with an AWS error ``code``."""
        if operation.startswith("Assume"):  # STS speaks the query protocol: errors are XML
            body = (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
                f"<Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
                "<RequestId>fake</RequestId></ErrorResponse>"
            )
            self._queue(operation, _Answer(status, body.encode(), "text/xml"))
        else:
            self.respond(operation, {"__type": code, "message": message}, status=status)

    def respond(self, operation: str, payload: dict, *, status: int = 200) -> None:
        """Answer the next ``operation`` call (a JSON-protocol API) with ``payload``."""
        self._queue(operation, _Answer(status, json.dumps(payload).encode(), "application/x-amz-json-1.1"))

    def _queue(self, operation: str, answer: _Answer) -> None:
        with self._lock:
            self._answers.setdefault(operation, []).append(answer)

    def _next_answer(self, operation: str) -> _Answer | None:
        with self._lock:
            queued = self._answers.get(operation)
            return queued.pop(0) if queued else None

    def _expires_at(self) -> float:
        return MOTO_EXPIRES_AT if self.token_lifetime is None else time.time() + self.token_lifetime

    def handle(self, method: str, path: str, headers: http.client.HTTPMessage, body: bytes) -> _Answer | None:
        """The answer to send, or None to close the connection unanswered."""
        if path == _POD_IDENTITY_PATH:
            return self._pod_identity(headers)
        call = _describe(headers, body)
        with self._lock:
            self.calls.append(call)
        if self.outage == "drop":
            return None
        if self.outage == "unavailable":
            error = {"__type": "ServiceUnavailableException", "message": "regcred test outage"}
            return _Answer(503, json.dumps(error).encode(), "application/x-amz-json-1.1")
        answer = self._answer(method, path, headers, body, call)
        _register_material(answer)
        return answer

    def _answer(self, method: str, path: str, headers: http.client.HTTPMessage, body: bytes, call: AwsCall) -> _Answer:
        answer = self._next_answer(call.operation)
        if answer is not None:
            return answer
        if call.service == "ecr-public":
            return self._ecr_public(call)
        answer = self._forward(method, path, headers, body)
        if call.service == "ecr" and call.operation == "GetAuthorizationToken" and answer.status == 200:
            document = json.loads(answer.body)
            for data in document.get("authorizationData", []):
                data["expiresAt"] = self._expires_at()
            answer = _Answer(200, json.dumps(document).encode(), answer.content_type)
        return answer

    def _ecr_public(self, call: AwsCall) -> _Answer:
        # ECR Public answers one authorizationData object, not a list like private ECR.
        token = base64.b64encode(f"AWS:ecr-public-token-for-{call.access_key_id}".encode()).decode()
        payload = {"authorizationData": {"authorizationToken": token, "expiresAt": self._expires_at()}}
        return _Answer(200, json.dumps(payload).encode(), "application/x-amz-json-1.1")

    def _pod_identity(self, headers: http.client.HTTPMessage) -> _Answer:
        # The agent's answer (the ECS container-credentials format); botocore sends the
        # projected service-account token file's content as the Authorization header.
        call = AwsCall("PodIdentityCredentials", None, None, None, False,
                       {"Authorization": headers.get("Authorization", "")})
        with self._lock:
            self.calls.append(call)
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6 * 3600))
        payload = {"AccessKeyId": POD_IDENTITY_KEY_ID, "SecretAccessKey": "pod-identity-secret",
                   "Token": "pod-identity-session-token", "Expiration": expiration}
        register(payload["SecretAccessKey"], "Pod Identity agent secret key")
        register(payload["Token"], "Pod Identity agent session token")
        return _Answer(200, json.dumps(payload).encode(), "application/json")

    def _forward(self, method: str, path: str, headers: http.client.HTTPMessage, body: bytes) -> _Answer:
        host, port = self._moto.get_host_and_port()
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            return _Answer(response.status, response.read(), response.getheader("Content-Type", "text/plain"))
        finally:
            connection.close()


def _register_material(answer: _Answer) -> None:
    """Tokens and keys AWS hands out, for the secret-hygiene check: ECR authorization tokens
    (base64 of ``AWS:<password>``), STS secret keys and session tokens."""
    text = answer.body.decode("utf-8", errors="replace")
    for name, value in _STS_SECRETS.findall(text):
        register(value, f"STS {name}")
    if "authorizationToken" not in text:
        return
    try:
        data = json.loads(text).get("authorizationData")
    except (ValueError, AttributeError):
        return
    for item in data if isinstance(data, list) else [data]:
        if isinstance(item, dict) and isinstance(item.get("authorizationToken"), str):
            register(item["authorizationToken"], "ECR authorization token")
            try:
                register(base64.b64decode(item["authorizationToken"]).partition(b":")[2], "ECR token password")
            except ValueError:
                pass


def _describe(headers: http.client.HTTPMessage, body: bytes) -> AwsCall:
    scope = _SCOPE.search(headers.get("Authorization", ""))
    target = headers.get("X-Amz-Target")
    params: dict[str, str] = {}
    if target:
        operation = target.rsplit(".", 1)[-1]
    else:
        params = dict(urllib.parse.parse_qsl(body.decode()))
        operation = params.get("Action", "?")
    return AwsCall(
        operation=operation,
        service=scope.group(3) if scope else None,
        region=scope.group(2) if scope else None,
        access_key_id=scope.group(1) if scope else None,
        session_token="X-Amz-Security-Token" in headers,
        params=params,
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.server.fake.handle(self.command, self.path, self.headers, body)  # type: ignore[attr-defined]
        if answer is None:
            self.close_connection = True
            return
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def aws_fake() -> Iterator[AwsFake]:
    fake = AwsFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def aws(aws_fake: AwsFake, monkeypatch: pytest.MonkeyPatch, tmp_path) -> AwsFake:
    """The fake, reset, with boto3 pointed at it and nothing of the developer's AWS set-up."""
    for name in _AMBIENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_fake.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no 1 s IMDS probe per test
    aws_fake.reset()
    return aws_fake
