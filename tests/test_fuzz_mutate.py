"""Fuzz ``POST /mutate`` with hypothesis: over 10,000 generated bodies, hostile or broken.

Strategies: random bytes, random JSON, truncated reviews, well-formed reviews around hostile
Pods (thousands of containers, 10,000-character and unicode images, nulls, arrays or objects
where strings belong, invalid references, imagePullSecrets holding nulls or non-objects) and
reviews whose envelope fields have the wrong types. For every body: never a 5xx; a 4xx carries
a one-line reason; a 200 allows the Pod, echoes the uid, reports no internal error, never shows
a credential, and its patch applies to the request's object with ``jsonpatch``, keeping what
was in ``imagePullSecrets`` and adding only objects. Each test checks it really posted its quota of
distinct bodies. Derandomized and database-free, so CI sees the same bodies every run.
"""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import build_deps
from webhook.app import create_app
from webhook.settings import Settings

REGISTRIES = """
registries:
  - {id: hub-acme, url: docker.io/acme, type: basic, secretRef: hub-acme}
  - {id: harbor, url: harbor.example.com/platform, type: basic, secretRef: harbor}
  - {id: whole-host, url: registry.example.com, type: basic, secretRef: harbor}
  - {id: no-creds, url: registry.example.com/nocreds, type: basic, secretRef: missing}
  - {id: prod, url: prod.example.com, type: basic, secretRef: harbor, namespaces: [payments]}
"""
CREDENTIALS = {
    "hub-acme": {"username": "acme-bot", "password": "fuzz-hub-password"},
    "harbor": {"username": "robot$ci", "password": "fuzz-harbor-password"},
}
JSON = {"content-type": "application/json"}
INTERNAL = "regcred: internal error"

# --- values where the schema wants something else ---------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
# A fixed menu of wrong types is as good at finding a missing isinstance as generated ones,
# and drawing from it is cheap: the whole file must post 10,000 bodies within a minute.
_JUNK = [None, True, False, 0, -1, 2**64, 1.5, float("inf"), "", "x", "acme/app", "é\u0000", [], [None],
         ["acme/app"], [{"name": "x"}], {}, {"name": None}, {"image": "acme/app"}, {"": [None]}]
_junk = st.sampled_from(_JUNK)

# --- images ---------------------------------------------------------------------------------
_VALID = ["acme/web:1.4.2", "nginx", "prod.example.com/app", "harbor.example.com/platform/migrate:2.1",
          "registry.example.com/x/y@sha256:" + "a" * 64, "registry.example.com/nocreds/app", "localhost:5000/app",
          "acme/web", "REGISTRY.example.com/a"]
_INVALID = ["", ":", "@", "a b", "Acme/App", "nginx:", "acme/app@sha256:short", "https://x.io/y", "a" * 64,
            "acme//app", "/acme", "acme/", "localhost:99999999999999999999/x", "acme/app\u0000", "\u202e/x",
            "acme/app:" + "t" * 200, "[::1/x", "x" * 300 + "/y"]
_image_chars = st.sampled_from("abcz09-_./:@AZ~%é\u0000 ")
_images = st.one_of(
    st.sampled_from(_VALID), st.sampled_from(_INVALID), st.text(max_size=40),
    st.text(alphabet=_image_chars, min_size=1, max_size=60),
    st.builds(lambda prefix, n: prefix + "a" * n, st.sampled_from(["acme/", "harbor.example.com/platform/", ""]),
              st.integers(9_000, 11_000)),
    st.integers(9_000, 11_000).map(lambda n: "harbor.example.com/platform/" + "é" * n),
    _junk,
)

# --- Pods -----------------------------------------------------------------------------------
_container = st.one_of(
    st.fixed_dictionaries({"name": st.text(max_size=8), "image": _images}),
    st.fixed_dictionaries({}, optional={"image": _images, "name": _junk}),
    _junk,
)
_containers = st.one_of(st.lists(_container, max_size=4), _junk)
_OURS = ["regcred-hub-acme", "regcred-harbor", "regcred-whole-host"]
_pull_secret = st.one_of(
    _junk, st.fixed_dictionaries({"name": st.one_of(st.sampled_from(_OURS), st.text(max_size=8), _junk)}),
)
_pull_secrets = st.one_of(st.lists(_pull_secret, max_size=4), _junk)
_spec = st.one_of(
    st.fixed_dictionaries({}, optional={"initContainers": _containers, "containers": _containers,
                                        "ephemeralContainers": _containers, "imagePullSecrets": _pull_secrets}),
    _junk,
)
_annotations = st.one_of(st.dictionaries(st.sampled_from(["regcred.io/inject", "x"]),
                                         st.one_of(st.sampled_from(["false", " FALSE ", "true"]), _junk), max_size=2),
                         _junk)
_metadata = st.one_of(
    st.fixed_dictionaries({}, optional={"namespace": st.one_of(st.just("team-a"), st.text(max_size=10), _junk),
                                        "annotations": _annotations, "name": _junk, "generateName": _junk}),
    _junk,
)
_pod = st.one_of(st.fixed_dictionaries({"spec": _spec}, optional={"metadata": _metadata, "kind": _junk}), _junk)


def _review(pod, **request) -> dict:
    envelope = {"uid": "fuzz-uid", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE", "namespace": "team-a", "object": pod}
    envelope.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": envelope}


_reviews = st.builds(_review, _pod)
_hostile_envelopes = st.builds(
    lambda pod, extra: _review(pod, **extra), _pod,
    st.fixed_dictionaries({}, optional={
        "uid": st.one_of(st.text(max_size=40), _junk), "kind": st.one_of(st.sampled_from([
            {"group": "", "version": "v1", "kind": "Pod"}, {"group": "apps", "version": "v1", "kind": "Pod"},
            {"group": "", "version": "v1beta1", "kind": "Pod"}]), _junk),
        "operation": st.one_of(st.sampled_from(["CREATE", "UPDATE", "DELETE"]), _junk),
        # Lone surrogates decode from JSON escapes and reach warnings ("not granted to <ns>").
        "namespace": st.one_of(st.sampled_from(["team-a", "kube-system", "", "payments"]),
                               st.text(alphabet=st.characters(categories=["Cs", "Ll", "So"]), max_size=6), _junk),
        "subResource": st.one_of(st.sampled_from(["ephemeralcontainers", ""]), _junk),
        "dryRun": _junk, "object": _junk, "name": _junk,
    }),
)


# Namespaces with lone surrogates, on a Pod whose registry is not granted to them: once they
# reached a warning and broke encoding the answer (a 500); now the parser refuses them (400).
# Either way: never a 5xx.
_surrogate_namespaces = st.builds(
    lambda namespace: _review({"spec": {"containers": [{"image": "prod.example.com/app"}]}}, namespace=namespace),
    st.text(alphabet=st.characters(categories=["Cs", "Ll"]), min_size=1, max_size=6),
)


def _encode(document) -> bytes:
    return json.dumps(document).encode()  # ASCII escapes: lone surrogates survive as JSON


# --- the oracle -----------------------------------------------------------------------------
def check(client, body: bytes) -> None:
    answer = client(body)
    assert answer.status_code < 500, answer.text
    for credential in CREDENTIALS.values():
        assert credential["password"] not in answer.text
    if answer.status_code != 200:
        assert 400 <= answer.status_code < 500
        assert answer.text.strip() and answer.text.endswith("\n") and answer.text.count("\n") == 1
        return
    request = json.loads(body)["request"]
    response = answer.json()["response"]
    assert response["allowed"] is True and response["uid"] == request["uid"]
    assert not any(warning.startswith(INTERNAL) for warning in response.get("warnings", [])), response
    if "patch" in response:
        pod = request["object"]
        before = pod["spec"].get("imagePullSecrets") or []
        patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        after = patched["spec"]["imagePullSecrets"]
        # What was there stays as it was (non-objects included: tests/fixtures/admission/
        # pull-secrets-with-junk-entries.yaml); everything added is an object with a name.
        assert isinstance(after, list) and after[: len(before)] == before, (before, after)
        assert all(isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in after[len(before):])
        if all(isinstance(entry, dict) for entry in before):
            assert all(isinstance(entry, dict) for entry in after)


def fuzz(client, strategy, examples: int) -> tuple[int, int]:
    """Post the bodies of ``examples`` examples of ``strategy`` (each a list of bodies).

    Returns how many bodies went, and how many were distinct.
    """
    seen: set[bytes] = set()
    posted = 0

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(bodies=strategy)
    def run(bodies: list[bytes]) -> None:
        nonlocal posted
        for body in bodies:
            posted += 1
            seen.add(body)
            check(client, body)

    run()
    return posted, len(seen)


def _with_truncations(document) -> list[bytes]:
    """The body, then cut at a third, two thirds and one byte short: a generated example is
    several times dearer than a call, and every cut of a hostile review is a new broken body."""
    body = _encode(document)
    return [body] + list(dict.fromkeys(body[:cut] for cut in (len(body) // 3, 2 * len(body) // 3, len(body) - 1)))


@pytest.fixture(scope="module")
def client():
    """POST a body to the app's /mutate through httpx's ASGI transport, on one event loop.

    Four times cheaper per call than TestClient's thread portal, which keeps 10,000 bodies
    within a minute on two cores.
    """
    app = create_app(Settings(), build_deps(REGISTRIES, CREDENTIALS))
    loop = asyncio.new_event_loop()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://regcred.test")

    def post(body: bytes) -> httpx.Response:
        return loop.run_until_complete(http.post("/mutate", content=body, headers=JSON))

    yield post
    loop.run_until_complete(http.aclose())
    loop.close()


# (strategy of body lists, examples, least bodies, least distinct): over 10,000 bodies with
# the thousands-of-containers test. The floors keep the count and the variety honest.
@pytest.mark.parametrize(("strategy", "examples", "least_bodies", "least_distinct"), [
    pytest.param(st.binary(max_size=512).map(lambda body: [body]), 2800, 2800, 2400, id="random-bytes"),
    pytest.param(_json.map(_with_truncations), 900, 1800, 1000, id="random-json-and-cuts"),
    pytest.param(_reviews.map(_with_truncations), 1300, 5200, 2800, id="hostile-pods-and-cuts"),
    pytest.param(_hostile_envelopes.map(lambda review: [_encode(review)]), 900, 900, 700, id="hostile-envelopes"),
    pytest.param(_surrogate_namespaces.map(lambda review: [_encode(review)]), 100, 100, 80, id="surrogate-namespaces"),
])
def test_fuzzed_bodies_never_break_mutate(client, strategy, examples, least_bodies, least_distinct) -> None:
    posted, distinct = fuzz(client, strategy, examples)
    assert posted >= least_bodies and distinct >= least_distinct, (posted, distinct)


_many = st.builds(
    lambda n, images, secrets: _review({"spec": {"containers": [{"name": f"c{i}", "image": images[i % len(images)]}
                                                                for i in range(n)], "imagePullSecrets": secrets}}),
    st.integers(1_000, 3_000), st.lists(_images, min_size=1, max_size=8), _pull_secrets,
)


def test_thousands_of_containers(client) -> None:
    posted, distinct = fuzz(client, _many.map(lambda review: [_encode(review)]), 20)
    assert posted >= 20 and distinct >= 16
