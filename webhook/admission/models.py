"""AdmissionReview, defined once, with types.

camelCase aliases as on the wire; unknown fields are kept (``extra="allow"``) so a newer API
server's additions never make a review invalid. The answer uses the apiVersion and kind it
was asked in, and echoes the request uid.
"""

from __future__ import annotations

import base64
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


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
    object: dict | None = None
    dry_run: StrictBool | None = Field(default=None, alias="dryRun")


class AdmissionReview(_Wire):
    api_version: Literal["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def allowed_response(api_version: str, uid: str, patch: list[dict], warnings: list[str]) -> dict:
    response: dict = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
