"""PATCH bodies for the fake API server (test fixture only).

Supported: JSON merge patch (RFC 7386), strategic merge patch (applied as a merge
patch; see ``apply_patch``) and JSON patch (RFC 6902). Server-side apply is not
implemented and answers 415, so a test that relies on it fails loudly.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer

from .apiserver_errors import ApiError, bad_request, unsupported_media_type

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch(content_type: str, current: dict, body: bytes) -> dict:
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        patch = json.loads(body or b"null")
    except ValueError as error:
        raise bad_request(f"error decoding patch: {error}") from error
    if media in (MERGE, STRATEGIC):
        # Strategic merge differs from a merge patch only for lists with a patchMergeKey
        # (ownerReferences, finalizers, ...) and $patch directives; secrets, configmaps,
        # namespaces and leases are maps of scalars where both give the same result.
        if not isinstance(patch, dict):
            raise bad_request("json: cannot unmarshal array into Go value of type "
                              "map[string]interface {}")
        return merge_patch(current, patch)
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            return jsonpatch.JsonPatch(patch).apply(copy.deepcopy(current))
        except jsonpatch.InvalidJsonPatch as error:
            raise bad_request(str(error)) from error
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
            # The real server answers a failed JSON patch with a bare 422.
            raise ApiError(422, "Invalid", str(error)) from error
    raise unsupported_media_type(content_type)
