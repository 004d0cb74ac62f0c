"""URL routing and discovery documents for the fake API server (test fixture only).

Paths follow the real layout: ``/api/v1/...`` for the core group, ``/apis/<group>/<v>/...``
otherwise, ``namespaces/<ns>/<resource>[/<name>]`` for namespaced objects and
``<resource>`` alone for cluster-scoped objects or lists across all namespaces.
The HTTP method plus the presence of a name and ``?watch=`` decide the verb, exactly
as the apiserver's request-info resolver does for its audit and RBAC checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from .apiserver_errors import bad_request
from .apiserver_resources import BY_PATH, RESOURCES, ResourceType

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/livez"})
VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
           "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
           "compiler": "gc", "platform": "linux/amd64"}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class Request:
    method: str
    path: str
    query_string: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    started: float

    @classmethod
    def from_scope(cls, scope: dict, body: bytes, started: float) -> Request:
        query_string = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return cls(scope["method"], scope["path"], query_string,
                   dict(parse_qsl(query_string, keep_blank_values=True)), headers, body, started)

    def json(self) -> object:
        if not self.body:
            raise bad_request("the request body is empty")
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise bad_request(f"couldn't get version/kind; json parse error: {error}") from None

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")

    def integer(self, name: str) -> int | None:
        value = self.query.get(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise bad_request(f"invalid value for {name}: {value!r}") from None


@dataclass
class Route:
    verb: str
    rtype: ResourceType | None = None
    namespace: str | None = None
    name: str | None = None
    document: object = None   # discovery payload for discovery paths, None otherwise

    @property
    def resource(self) -> str | None:
        return self.rtype.plural if self.rtype else None

    @property
    def group(self) -> str:
        return self.rtype.group if self.rtype else ""

    @property
    def target(self) -> tuple[str, str | None, str | None, str | None]:
        """What fault and authorization rules match on."""
        return self.verb, self.resource, self.namespace, self.name


def resolve(request: Request, server_address: str) -> Route | None:
    """The route for a request; None when no resource or document lives at the path."""
    parts = [part for part in request.path.split("/") if part]
    document = discovery(parts, server_address)
    if document is not None:
        return Route("get", document=document)
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    rtype = BY_PATH.get((group, version, rest[0])) if rest else None
    if rtype is None or len(rest) > 2 or (namespace and not rtype.namespaced):
        return None
    name = rest[1] if len(rest) == 2 else None
    verb = _verb(request, name)
    if verb is None or (rtype.namespaced and not namespace and verb not in ("list", "watch")):
        return None
    return Route(verb, rtype, namespace, name)


def _verb(request: Request, name: str | None) -> str | None:
    if request.method == "GET":
        if name:
            return "get"
        return "watch" if request.flag("watch") else "list"
    if name:
        return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method)
    return {"POST": "create", "DELETE": "deletecollection"}.get(request.method)


def discovery(parts: list[str], server_address: str) -> object:
    path = "/" + "/".join(parts)
    if path in HEALTH_PATHS:
        return "ok"
    if path == "/version":
        return VERSION
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            _group(group) for group in sorted({r.group for r in RESOURCES if r.group})]}
    if parts == ["api", "v1"]:
        return _resource_list("", "v1")
    if len(parts) == 3 and parts[0] == "apis":
        return _resource_list(parts[1], parts[2])
    return None


def _group(group: str) -> dict:
    versions = [{"groupVersion": f"{group}/{r.version}", "version": r.version}
                for r in RESOURCES if r.group == group]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def _resource_list(group: str, version: str) -> dict | None:
    resources = [{"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                  "kind": r.kind, "verbs": _VERBS}
                 for r in RESOURCES if (r.group, r.version) == (group, version)]
    if not resources:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}
