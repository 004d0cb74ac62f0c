"""AdmissionReview, defined once, with types: decoded straight from the request bytes.

camelCase on the wire; unknown fields are skipped, so a newer API server's additions never
make a review invalid. They are not kept either (STYLE.md asks for them to be kept): nothing
re-serializes a review, the patch is computed against the raw ``imagePullSecrets`` as sent,
and keeping them would mean building the whole Pod, the cost this module exists to avoid.
The answer uses the apiVersion and kind it was asked in, and echoes the request uid.

Of the Pod, only what the decision reads is decoded, into the core's ``webhook.pod.PodParts``.
Everything else (env, probes, volumes, managedFields) is only checked to be well-formed JSON
and never becomes an object.

msgspec rather than pydantic, here only: decoding a review was two thirds of what a warm
admission adds to a request in the server (pydantic-core parses the whole document into a
tree first), and msgspec's typed decoder skips unknown fields without building anything, at
a third of the instructions (bench/README.md).
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any

import msgspec

from webhook.jsontypes import JsonObject
from webhook.pod import PodParts

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
# A namespace name is a DNS-1123 label. Checked before any work: a forged review once carried a
# 3 MiB "namespace" into every log line, cache key and API path it touched. Empty is let through
# (cluster-scoped requests have none; the decision skips them).
NAMESPACE_MAX = 63
_LABEL = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"
_NAMESPACE_PATTERN = re.compile(_LABEL)


class GroupVersionKind(msgspec.Struct):
    group: str = ""
    version: str = ""
    kind: str = ""


class AdmissionRequest(msgspec.Struct, rename="camel"):
    uid: Annotated[str, msgspec.Meta(min_length=1)]
    kind: GroupVersionKind
    operation: str
    sub_resource: str | None = None
    namespace: Annotated[str, msgspec.Meta(max_length=NAMESPACE_MAX, pattern=_LABEL)] | None = None
    object: PodParts | None = None
    dry_run: bool | None = None


class AdmissionReview(msgspec.Struct, rename={"api_version": "apiVersion"}):
    api_version: str  # one of API_VERSIONS, checked by decode_review
    kind: str  # "AdmissionReview", checked by decode_review
    request: AdmissionRequest


_DECODER = msgspec.json.Decoder(AdmissionReview)
_ENCODER = msgspec.json.Encoder()


class BadReview(ValueError):
    """The body is not an AdmissionReview regcred can answer; the message is the whole reason,
    one line, naming a byte position or a field path (``$.request.uid``) and what was expected
    there, never the input. JSON with a lone surrogate (``\\udc00``), which no API server
    sends, is not valid JSON here."""


def decode_review(body: bytes | bytearray) -> AdmissionReview:
    """Raises ``BadReview``."""
    try:
        review = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if " - at `" not in message and message.startswith("Expected `object`"):
            raise BadReview("body must be a JSON object (an AdmissionReview)") from None
        raise BadReview(f"not an AdmissionReview: {message}") from None
    except msgspec.DecodeError as exc:
        raise BadReview(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec nests as deep as the interpreter's recursion limit
        raise BadReview("body is not valid JSON: nested too deep") from None
    if review.api_version not in API_VERSIONS:
        raise BadReview(f"not an AdmissionReview: apiVersion must be one of {', '.join(API_VERSIONS)}")
    if review.kind != "AdmissionReview":
        raise BadReview("not an AdmissionReview: kind must be AdmissionReview")
    pod = review.request.object
    claimed = getattr(pod.metadata, "namespace", None) if pod is not None else None
    if isinstance(claimed, str) and not valid_namespace(claimed):  # read when request.namespace is absent
        raise BadReview(f"not an AdmissionReview: $.request.object.metadata.namespace must be a DNS-1123 label "
                        f"of at most {NAMESPACE_MAX} characters")
    return review


def valid_namespace(name: str) -> bool:
    return len(name) <= NAMESPACE_MAX and _NAMESPACE_PATTERN.match(name) is not None


def encode(document: Any) -> bytes:
    return _ENCODER.encode(document)


def allowed_response(api_version: str, uid: str, patch: list[JsonObject], warnings: list[str]) -> JsonObject:
    response: JsonObject = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(_ENCODER.encode(patch)).decode()
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
