"""AdmissionReview, defined once, with types: decoded straight from the request bytes.

camelCase aliases as on the wire; unknown fields are ignored, so a newer API server's
additions never make a review invalid. The answer uses the apiVersion and kind it was asked
in, and echoes the request uid.

Of the Pod, only what the decision reads is kept (``PodParts``): namespace and annotations,
each container's image, and ``imagePullSecrets`` exactly as sent, so the patch is still
computed against the raw values the API server will apply it to. Everything else (env,
probes, volumes, managedFields) is parsed by pydantic-core and never becomes a Python object:
decoding was the largest part of a warm admission (bench/README.md). Odd values are kept as
they are, never refused: each narrowed field falls back to ``Any`` (left to right, so the
narrow form is tried once), and ``mutation`` ignores what is not the shape it reads.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from pydantic_core import to_json
from typing_extensions import TypedDict

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _or_as_sent(narrow: Any) -> Any:
    """``narrow`` when the value has that shape, else the value as sent."""
    return Annotated[Union[narrow, Any], Field(union_mode="left_to_right")]


class _Container(TypedDict, total=False):
    image: Any


_Containers = _or_as_sent(list[_or_as_sent(_Container)])


class _PodSpec(TypedDict, total=False):
    initContainers: _Containers
    containers: _Containers
    ephemeralContainers: _Containers
    imagePullSecrets: Any


class _PodMetadata(TypedDict, total=False):
    namespace: Any
    annotations: Any


class PodParts(TypedDict, total=False):
    """The parts of a Pod regcred reads, as plain dicts and lists (see the module docstring)."""

    metadata: _or_as_sent(_PodMetadata)
    spec: _or_as_sent(_PodSpec)


class GroupVersionKind(_Wire):
    group: StrictStr = ""
    version: StrictStr = ""
    kind: StrictStr = ""


class GroupVersionResource(_Wire):
    group: StrictStr = ""
    version: StrictStr = ""
    resource: StrictStr = ""


class AdmissionRequest(_Wire):
    uid: StrictStr = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource | None = None
    sub_resource: StrictStr | None = Field(default=None, alias="subResource")
    name: StrictStr | None = None
    namespace: StrictStr | None = None
    operation: StrictStr
    object: PodParts | None = None
    dry_run: StrictBool | None = Field(default=None, alias="dryRun")


class AdmissionReview(_Wire):
    api_version: Literal["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def allowed_response(api_version: str, uid: str, patch: list[dict], warnings: list[str]) -> dict:
    response: dict = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(to_json(patch)).decode()
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
