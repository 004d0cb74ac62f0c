"""The providers regcred ships, by registry type."""

from __future__ import annotations

from webhook.providers import Provider
from webhook.providers.acr import AcrProvider
from webhook.providers.basic import BasicProvider
from webhook.providers.ecr import EcrProvider
from webhook.providers.gcr import GcrProvider


def builtin_providers() -> dict[str, Provider]:
    return {"basic": BasicProvider(), "ecr": EcrProvider(), "gcr": GcrProvider(), "acr": AcrProvider()}
