"""The parts of a Pod that regcred's pure core reads, as typed structs.

Only what the decision needs is decoded: namespace and annotations, each container's image,
and ``imagePullSecrets`` exactly as sent, so a patch is computed against the raw values the
API server will apply it to. Odd values are kept as sent, never refused: each narrowed field
is a union that also admits every other JSON type, and ``mutation`` ignores what is not the
shape it reads. The wire (``admission.models``) decodes reviews into these; the core never
depends on the wire.
"""

from __future__ import annotations

from typing import Any

import msgspec

_Scalar = str | int | float | bool | None


class Container(msgspec.Struct):
    image: Any = None


# Any JSON value; an object is read as a container, an array as a list of such values.
_ContainerItem = Container | list[Any] | _Scalar
_Containers = list[_ContainerItem] | dict[str, Any] | _Scalar


class PodSpec(msgspec.Struct, rename="camel"):
    init_containers: _Containers = None
    containers: _Containers = None
    ephemeral_containers: _Containers = None
    image_pull_secrets: Any = None


class PodMetadata(msgspec.Struct):
    namespace: Any = None
    annotations: Any = None


class PodParts(msgspec.Struct):
    """The parts of a Pod regcred reads (see the module docstring)."""

    metadata: PodMetadata | list[Any] | _Scalar = None
    spec: PodSpec | list[Any] | _Scalar = None
