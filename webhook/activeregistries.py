"""The active registry list: load it, keep the last good one when a new one is broken, report.

A broken list never replaces a working one: the errors go to the log and to
``regcred_config_valid``, and admission keeps matching against the last good list.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from webhook.metrics import Metrics
from webhook.registries import Matcher, RegistryList, parse_registries
from webhook.yamlload import ConfigError

log = logging.getLogger(__name__)


class ActiveRegistries:
    def __init__(self, metrics: Metrics):
        self._metrics = metrics
        self.registries: RegistryList | None = None
        self.matcher = Matcher(RegistryList())
        self.errors: list[str] = []
        self._listeners: list[Callable[[RegistryList], None]] = []

    def subscribe(self, listener: Callable[[RegistryList], None]) -> None:
        """``listener(registries)`` after every list applied (e.g. the watches following it)."""
        self._listeners.append(listener)

    @property
    def ready(self) -> bool:
        """True once some valid list has been applied."""
        return self.registries is not None

    def apply_text(self, text: str, source: str) -> bool:
        """Validate ``text`` and make it active; on error keep the last good list. Returns validity."""
        try:
            registries = parse_registries(text)
        except ConfigError as exc:
            self.errors = exc.errors
            self._metrics.config_valid.set(0)
            self._metrics.config_reloads.labels("rejected").inc()
            kept = "keeping the last good list" if self.ready else "no registry list is active"
            log.error("registry list rejected; %s", kept, extra={"source": source, "errors": exc.errors})
            return False
        self.registries, self.matcher, self.errors = registries, Matcher(registries), []
        self._metrics.config_valid.set(1)
        self._metrics.config_registries.set(len(registries.registries))
        self._metrics.config_generation.inc()
        self._metrics.registry_info.clear()
        for registry in registries.registries:
            self._metrics.registry_info.labels(registry.id, registry.type).set(1)
        self._metrics.config_reloads.labels("applied").inc()
        log.info("registry list applied", extra={"source": source, "registries": len(registries.registries)})
        for listener in self._listeners:
            listener(registries)
        return True

    def apply_file(self, path: Path) -> bool:
        try:
            text = path.read_text()
        except OSError as exc:
            return self.apply_text_error(f"cannot read {path}: {exc.strerror}", str(path))
        return self.apply_text(text, str(path))

    def apply_text_error(self, error: str, source: str) -> bool:
        self.errors = [error]
        self._metrics.config_valid.set(0)
        self._metrics.config_reloads.labels("rejected").inc()
        log.error("registry list unreadable", extra={"source": source, "errors": [error]})
        return False
