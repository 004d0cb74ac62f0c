"""A cloud outage, end to end: Pods admitted through /mutate while ECR (moto) or Google's token
endpoint is unreachable or failing, then recovery when it returns.

The token cache runs on a clock the test moves (hours pass in a loop of a few admissions);
the providers, boto3 and google-auth, talk real HTTP to the fakes, which play the outage
(``outage = "drop"``: connections closed unanswered; ``"unavailable"``: HTTP errors).
boto3 is held to one attempt per mint (``AWS_MAX_ATTEMPTS``, its own knob) so the cache's
backoff is the only retry policy in play.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from tests.conftest import DictMaterial
from tests.support.fake_tokens import Clock
from tests.support.google_token import GoogleTokenServer, google, google_token_server  # noqa: F401
from tests.support.kube import auths, pod_review
from tests.support.moto import AwsFake, aws, aws_fake  # noqa: F401
from tests.support.sensitive import observe_response
from webhook.activeregistries import ActiveRegistries
from webhook.app import Dependencies, Readiness, create_app
from webhook.credentialcache import BACKOFF_MAX, BACKOFF_MIN, CredentialCache
from webhook.metrics import Metrics
from webhook.providers.ecr import EcrProvider
from webhook.providers.gcr import GcrProvider
from webhook.pullsecrets import EXPIRES_ANNOTATION, InMemorySecretStore
from webhook.secretwriter import SecretWriter
from webhook.settings import Settings

ECR_HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
GAR_URL = "europe-docker.pkg.dev/acme/images"
REGISTRIES = f"""
registries:
  - {{id: ecr-prod, url: {ECR_HOST}, type: ecr, secretRef: aws-keys}}
  - {{id: gar, url: {GAR_URL}, type: gcr, secretRef: gcp-key, gcr: {{allowedTokenUris: [TOKEN_URI]}}}}
"""
# Where the outage starts, then the admissions made before the token expires (fractions of its life).
OUTAGE_STEPS = (0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.99)
AFTER_EXPIRY = 3  # admissions after the last token expired, a minute apart
RECOVERY_STEP = 5.0  # seconds of clock between admissions once the endpoint is back


@dataclass
class Cloud:
    """One registry's side of the test: its fake endpoint and how to read it."""

    registry: str
    image: str
    url: str
    life: float  # seconds a minted token lives
    endpoint: AwsFake | GoogleTokenServer

    def end_outage(self, clock: Clock) -> None:
        """Serve again, tokens living ``life`` from the test clock's now (hours ahead of real time)."""
        ahead = clock.now - time.time()
        if isinstance(self.endpoint, AwsFake):
            self.endpoint.token_lifetime = ahead + self.life
        else:
            self.endpoint.expires_in = int(ahead + self.life)
        self.endpoint.outage = None

    def mint_calls(self) -> int:
        if isinstance(self.endpoint, AwsFake):
            return self.endpoint.operations().count("GetAuthorizationToken")
        return len(self.endpoint.issued) + self.endpoint.outage_calls


@dataclass
class World:
    cloud: Cloud
    clock: Clock
    metrics: Metrics
    store: InMemorySecretStore
    client: TestClient
    answers: list[dict] = field(default_factory=list)

    def admit(self, namespace: str) -> dict:
        answer = self.client.post("/mutate", json=pod_review(namespace, self.cloud.image, str(uuid.uuid4())))
        assert answer.status_code == 200, answer.text
        response = answer.json()["response"]
        self.answers.append(response)
        return response

    def written(self, namespace: str) -> tuple[str, float] | None:
        """The token in the namespace's pull Secret, and its expiry (moto's tokens repeat; expiries do not)."""
        secret = self.store.get(namespace, f"regcred-{self.cloud.registry}")
        if secret is None:
            return None
        expires = datetime.strptime(secret["metadata"]["annotations"][EXPIRES_ANNOTATION], "%Y-%m-%dT%H:%M:%SZ")
        return auths(secret)[self.cloud.url]["password"], expires.replace(tzinfo=UTC).timestamp()

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def mints(self, outcome: str) -> float:
        return self.count("regcred_token_mints_total", registry=self.cloud.registry, outcome=outcome)

    def wait_for_mints(self, outcome: str, expected: float) -> None:
        """Refresh-ahead mints run in the background; wait (bounded) until they are counted."""
        deadline = time.monotonic() + 15
        while self.mints(outcome) < expected:
            assert time.monotonic() < deadline, f"{outcome} mints: {self.mints(outcome)} of {expected}"
            time.sleep(0.01)


CLOUDS = {
    "ecr": lambda aws, google: Cloud("ecr-prod", f"{ECR_HOST}/team/app:1", ECR_HOST, 12 * 3600.0, aws),
    "gar": lambda aws, google: Cloud("gar", f"{GAR_URL}/app:1", GAR_URL, 3599.0, google),
}


@pytest.fixture
def world(request, aws, google, monkeypatch):  # noqa: F811
    """``request.param``: a CLOUDS key, plus ``+sdk-retries`` to leave boto3 its own retries."""
    name, _, variant = request.param.partition("+")
    if variant != "sdk-retries":
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    key = google.new_key()
    material = DictMaterial({
        "aws-keys": {"aws_access_key_id": "AKIAOUTAGETEST000001",
                     "aws_secret_access_key": "outage-test-aws-secret-key"},
        "gcp-key": {"key.json": key.text},
    })
    clock, metrics = Clock.starting_now(), Metrics()
    config = ActiveRegistries(metrics)
    assert config.apply_text(REGISTRIES.replace("TOKEN_URI", google.token_uri), "test")
    cache = CredentialCache({"ecr": EcrProvider(), "gcr": GcrProvider(timeout=5)}, material, metrics, clock=clock)
    store = InMemorySecretStore()
    readiness = Readiness({"certificate loaded": True})
    deps = Dependencies(metrics, config, SecretWriter(store, sole_writer=True), cache, readiness)
    with TestClient(create_app(Settings(), deps)) as client:
        client.event_hooks = {"request": [], "response": [observe_response]}
        yield World(CLOUDS[name](aws, google), clock, metrics, store, client)


def _start_outage(cloud: Cloud, mode: str) -> None:
    if isinstance(cloud.endpoint, GoogleTokenServer) and mode == "unavailable":
        # 502 from a load balancer: google-auth does not retry it itself (it does retry 500,
        # 503 and 504, three attempts over about 3 s), so one mint is one call here too.
        mode = "bad_gateway"
    cloud.endpoint.outage = mode


def _warnings(response: dict) -> list[str]:
    return response.get("warnings") or []


def _references(response: dict) -> bool:
    patch = json.loads(base64.b64decode(response["patch"])) if response.get("patch") else []
    return any(op["path"].startswith("/spec/imagePullSecrets") for op in patch)


OUTAGES = [
    pytest.param("ecr", "drop", id="ecr-unreachable"),
    pytest.param("ecr", "unavailable", id="ecr-503"),
    pytest.param("gar", "drop", id="google-unreachable"),
    pytest.param("gar", "unavailable", id="google-502"),
]


@pytest.mark.parametrize(("world", "mode"), OUTAGES, indirect=["world"])
def test_pods_are_admitted_through_an_outage_and_recover_when_the_cloud_returns(world: World, mode: str):
    cloud, clock = world.cloud, world.clock
    first = world.admit("ns-0")
    before = world.written("ns-0")
    assert first["allowed"] and _references(first) and not _warnings(first) and before is not None
    start, expiry = clock.now, world.count("regcred_token_expiry_timestamp_seconds", registry=cloud.registry)
    assert expiry == pytest.approx(start + cloud.life, abs=60)

    _start_outage(cloud, mode)
    _admit_until_expiry(world, start, before)
    _admit_after_expiry(world, expiry)
    back = clock.now
    cloud.end_outage(clock)
    recovery, waited = _admit_until_fresh(world, before)
    assert world.count("regcred_token_expiry_timestamp_seconds", registry=cloud.registry) > expiry
    assert recovery <= BACKOFF_MAX
    # One endpoint call per mint: the cache's backoff, not the SDK, paced the retries.
    assert cloud.mint_calls() == world.mints("success") + world.mints("failure")
    denied = sum(not answer["allowed"] for answer in world.answers)
    assert denied == 0
    print(f"\n{cloud.registry}/{mode}: admissions={len(world.answers)} denied={denied} "
          f"before_expiry_on_last_token={len(OUTAGE_STEPS)} failed_mints={int(world.mints('failure'))} "
          f"over_clock_h={(back - start - OUTAGE_STEPS[0] * cloud.life) / 3600:.2f} "
          f"warned_unavailable={int(world.count('regcred_registry_unavailable_total', registry=cloud.registry))} "
          f"recovery_clock_s={recovery:.0f} admissions_until_fresh={waited}")


def _admit_until_expiry(world: World, start: float, before: tuple[str, float]) -> None:
    """Before expiry: the last valid token, in the Secret the Pod is told to use; no warning."""
    attempts, retry_at = 0, 0.0
    for index, fraction in enumerate(OUTAGE_STEPS, start=1):
        world.clock.now = start + fraction * world.cloud.life
        response = world.admit(f"ns-{index}")
        assert response["allowed"] and _references(response) and not _warnings(response)
        assert world.written(f"ns-{index}") == before
        if world.clock.now >= retry_at:  # a refresh-ahead mint starts only once the backoff has passed
            attempts += 1
            retry_at = world.clock.now + min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (attempts - 1))
        world.wait_for_mints("failure", attempts)
    assert world.mints("failure") == attempts and world.mints("success") == 1


def _admit_after_expiry(world: World, expiry: float) -> None:
    """Expired and no new one: still allowed, no reference to a dead token, a warning."""
    registry = world.cloud.registry
    world.clock.now = expiry + 1
    for index in range(AFTER_EXPIRY):
        response = world.admit(f"late-{index}")
        assert response["allowed"] and not _references(response)
        assert _warnings(response) == [f"regcred: credentials for registry {registry} are unavailable"]
        world.clock.now += 60
    assert world.count("regcred_registry_unavailable_total", registry=registry) == AFTER_EXPIRY


def _admit_until_fresh(world: World, before: tuple[str, float]) -> tuple[float, int]:
    """The endpoint is back: admit every few seconds until a fresh token is written. Returns
    the clock seconds that took and the admissions made."""
    back, waited = world.clock.now, 0
    while world.written("ns-0") == before:
        assert world.clock.now - back <= BACKOFF_MAX + RECOVERY_STEP, "no fresh token within the longest backoff"
        response = world.admit("ns-0")
        assert response["allowed"]
        waited += 1
        world.clock.now += RECOVERY_STEP
    fresh = world.written("ns-0")
    assert fresh is not None and fresh[1] > world.clock.now > before[1] and world.mints("success") == 2
    assert _references(response) and not _warnings(response)
    return world.clock.now - RECOVERY_STEP - back, waited


@pytest.mark.parametrize("world", [pytest.param("ecr+sdk-retries", id="ecr"),
                                   pytest.param("gar+sdk-retries", id="google")], indirect=True)
def test_a_503_outage_retried_inside_the_sdk_still_answers_the_admission(world: World):
    """boto3 and google-auth retry a 503 themselves, sleeping between attempts: an admission
    that has to wait for a mint (no valid token left) is answered at the admission budget."""
    cloud, clock = world.cloud, world.clock
    assert world.admit("ns-0")["allowed"]
    calls = cloud.mint_calls()
    cloud.endpoint.outage = "unavailable"
    clock.now = world.count("regcred_token_expiry_timestamp_seconds", registry=cloud.registry) + 1
    started = time.monotonic()
    response = world.admit("ns-1")
    waited = time.monotonic() - started
    assert response["allowed"]
    assert _warnings(response)[0] in (f"regcred: credentials for registry {cloud.registry} are unavailable",
                                      f"regcred: regcred-{cloud.registry} is still being prepared")
    world.wait_for_mints("failure", 1)
    per_mint = cloud.mint_calls() - calls
    assert per_mint == 3  # the SDK retried (boto3 standard mode, google-auth) before the cache saw one failure

    cloud.end_outage(clock)
    clock.now += BACKOFF_MIN
    response = world.admit("ns-1")
    assert response["allowed"] and _references(response) and not _warnings(response)
    assert world.written("ns-1")[1] > clock.now and world.mints("success") == 2
    print(f"\n{cloud.registry}/503 with SDK retries: calls_per_failed_mint={per_mint} "
          f"admission_wall_s={waited:.2f} warning={_warnings(world.answers[1])[0]!r}")
