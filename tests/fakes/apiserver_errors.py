"""Kubernetes ``Status`` error bodies for the fake API server (test fixture only).

Every error the fake returns is a ``metav1.Status`` shaped exactly like the real
kube-apiserver's, because clients (and regcred) branch on ``code`` and ``reason``.
Quirks reproduced:

* ``details.kind`` is the *resource* (``secrets``) for NotFound/AlreadyExists/
  Conflict/Forbidden, but the *Kind* (``Secret``) for Invalid (422): the real
  server builds the former from a GroupResource and the latter from a GroupKind.
* Invalid messages name the kind qualified by group (``Lease.coordination.k8s.io``).
* A watch from a compacted resourceVersion is HTTP 200 followed by an ``ERROR``
  event whose object is a 410 Status with reason ``Expired``.
"""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

MESSAGES = {
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, "
    "but may still be processing the request",
}


class ApiError(Exception):
    """An error answered as a Status body; ``status`` is the dict sent on the wire."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details if details is not None else {},
            "code": code,
        }
        if details is None:
            del self.status["details"]
        self.headers: dict[str, str] = {}


def _details(name: str, group: str, kind: str, **extra: Any) -> dict:
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    details.update(extra)
    return details


def qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(resource, group)} "{name}" not found',
                    _details(name, group, resource))


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(resource, group)} "{name}" already exists',
                    _details(name, group, resource))


def conflict(resource: str, name: str, group: str = "", why: str = "") -> ApiError:
    why = why or ("the object has been modified; please apply your changes "
                  "to the latest version and try again")
    message = f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(name, group, resource))


def field_error(field: str, kind: str, value: Any = None, detail: str = "",
                shown: str | None = None) -> dict:
    """One ``StatusCause``; ``kind`` is Invalid/Required/Forbidden/TooLong like field.Error.

    ``shown`` overrides how the value is printed (Go prints some values unquoted, e.g. 0x0).
    """
    reasons = {"Invalid": "FieldValueInvalid", "Required": "FieldValueRequired",
               "Forbidden": "FieldValueForbidden", "TooLong": "FieldValueTooLong"}
    titles = {"Invalid": "Invalid value", "Required": "Required value",
              "Forbidden": "Forbidden", "TooLong": "Too long"}
    body = titles[kind]
    if kind == "Invalid":
        if shown is None:
            shown = f'"{value}"' if isinstance(value, str) else str(value)
        body += f": {shown}"
    if detail:
        body += f": {detail}"
    return {"reason": reasons[kind], "message": body, "field": field}


def invalid(kind: str, name: str, causes: list[dict], group: str = "") -> ApiError:
    parts = [f"{c['field']}: {c['message']}" for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    message = f'{qualified(kind, group)} "{name}" is invalid: {joined}'
    return ApiError(422, "Invalid", message, _details(name, group, kind, causes=causes))


def forbidden(user: str, verb: str, resource: str, group: str,
              namespace: str | None, name: str | None) -> ApiError:
    subject = f'{qualified(resource, group)} "{name}"' if name else qualified(resource, group)
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (f'{subject} is forbidden: User "{user}" cannot {verb} resource '
               f'"{resource}" in API group "{group}" {scope}')
    return ApiError(403, "Forbidden", message, _details(name or "", group, resource))


def terminating(namespace: str, resource: str, group: str, name: str) -> ApiError:
    """NamespaceLifecycle's refusal of new content in a namespace being deleted."""
    message = f"unable to create new content in namespace {namespace} because it is being terminated"
    return ApiError(403, "Forbidden", message, _details(name, group, resource))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}",
                    {"causes": [{"message": message}]})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: application/json-patch+json, application/merge-patch+json, "
                    f"application/strategic-merge-patch+json (got {content_type!r})")


def injected(code: int, retry_after: int | None = None) -> ApiError:
    """An error for ``fail_next``: the status a flaky or overloaded apiserver would send."""
    details = {"retryAfterSeconds": retry_after} if retry_after is not None else None
    error = ApiError(code, REASONS.get(code, "Unknown"),
                     MESSAGES.get(code, f"injected fault {code}"), details)
    if retry_after is not None:
        error.headers["Retry-After"] = str(retry_after)
    return error
