"""The review decoder keeps the Pod parts regcred reads exactly as sent, whatever their shape.

Property tests (hypothesis): any JSON value in any field of the Pod is accepted (odd Pods are
allowed, never refused), and what the decoder hands ``mutation`` agrees with a plain reading of
the raw JSON: the same images in the same order, the same ``imagePullSecrets`` value, the same
namespace and annotations.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from webhook.admission.models import BadReview, decode_review
from webhook.mutation import opted_out, pod_images
from webhook.pod import Container, PodMetadata, PodSpec

_LISTS = ("initContainers", "containers", "ephemeralContainers")

_scalars = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
_image = st.sampled_from(["acme/app:1", "nginx", "harbor.example.com/platform/x:2", ""]) | _json
_container = st.fixed_dictionaries({}, optional={"image": _image, "name": _json, "env": _json}) | _json
_containers = st.lists(_container, max_size=4) | _json
_spec = st.fixed_dictionaries({}, optional={**{name: _containers for name in _LISTS},
                                            "imagePullSecrets": _json, "volumes": _json}) | _json
_metadata = st.fixed_dictionaries({}, optional={
    "namespace": _json | st.text(max_size=8) | st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True),
    "annotations": st.dictionaries(st.sampled_from(["regcred.io/inject", "x"]), _json, max_size=2) | _json,
    "labels": _json}) | _json
_pods = st.fixed_dictionaries({}, optional={"metadata": _metadata, "spec": _spec, "status": _json})


def _review(pod: dict) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "userInfo": {"username": "x"}, "object": pod}}).encode()


def _raw_images(pod: dict) -> list[str]:
    """The oracle: images read straight from the raw JSON."""
    spec = pod.get("spec")
    found: list[str] = []
    for name in _LISTS if isinstance(spec, dict) else ():
        for container in spec.get(name) if isinstance(spec.get(name), list) else ():
            image = container.get("image") if isinstance(container, dict) else None
            if isinstance(image, str) and image and image not in found:
                found.append(image)
    return found


@settings(max_examples=400, deadline=None)
@given(pod=_pods)
@example(pod={"spec": {name: [{"image": f"{name.lower()}/app:1"}, 7] for name in _LISTS}})
def test_any_pod_is_decoded_and_read_as_sent(pod: dict) -> None:
    claimed = pod.get("metadata", {}).get("namespace") if isinstance(pod.get("metadata"), dict) else None
    if isinstance(claimed, str) and not re.fullmatch(r"([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?", claimed):
        with pytest.raises(BadReview, match="namespace must be a DNS-1123 label"):
            decode_review(_review(pod))
        return
    parts = decode_review(_review(pod)).request.object
    assert pod_images(parts) == _raw_images(pod)
    spec, metadata = pod.get("spec"), pod.get("metadata")
    if isinstance(spec, dict):
        assert isinstance(parts.spec, PodSpec)
        assert parts.spec.image_pull_secrets == spec.get("imagePullSecrets")
        for name, value in ((n, getattr(parts.spec, a)) for n, a in
                            zip(_LISTS, ("init_containers", "containers", "ephemeral_containers"), strict=True)):
            if isinstance(spec.get(name), list):  # objects narrowed to containers, the rest as sent
                assert [c.image if isinstance(c, Container) else c for c in value] == \
                    [c.get("image") if isinstance(c, dict) else c for c in spec[name]]
            else:
                assert value == spec.get(name)
    else:
        assert parts.spec == spec
    if isinstance(metadata, dict):
        assert isinstance(parts.metadata, PodMetadata)
        assert (parts.metadata.namespace, parts.metadata.annotations) == \
            (metadata.get("namespace"), metadata.get("annotations"))
        annotations = metadata.get("annotations")
        raw_opt_out = isinstance(annotations, dict) and \
            str(annotations.get("regcred.io/inject", "")).strip().lower() == "false"
        assert opted_out(parts) == raw_opt_out
    else:
        assert parts.metadata == metadata


@pytest.mark.parametrize(("body", "reason"), [
    pytest.param(b"{", "body is not valid JSON", id="truncated"),
    pytest.param(b'"x"', "body must be a JSON object", id="string"),
    pytest.param(_review({}).replace(b'"u-1"', b'""'), "$.request.uid", id="empty-uid"),
    pytest.param(_review({}).replace(b"admission.k8s.io/v1", b"admission.k8s.io/v9"), "apiVersion must be",
                 id="version"),
    pytest.param(_review({}).replace(b'"object": {}', b'"object": ' + b"[" * 5000 + b"]" * 5000), "$.request.object",
                 id="object-is-an-array"),
    pytest.param(_review({"x": "@"}).replace(b'"@"', b"[" * 100_000 + b"]" * 100_000), "nested too deep",
                 id="nested-too-deep"),
])
def test_refusals_name_where_not_what(body: bytes, reason: str) -> None:
    with pytest.raises(BadReview) as refused:
        decode_review(body)
    assert reason in str(refused.value) and "v9" not in str(refused.value) and "\n" not in str(refused.value)
