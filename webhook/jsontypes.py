"""Names for JSON as it arrives: raw Kubernetes objects and other decoded documents.

regcred reads a few fields of objects it never models in full (Pods, Secrets, Leases, webhook
configurations), so their type says only "a JSON object"; readers check the shape they need.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonObject: TypeAlias = dict[str, Any]
