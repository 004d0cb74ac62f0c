"""The suite-wide secret-hygiene check: what each test logged, warned, exposed as metrics or
received as an error body, and what ``regcred serve`` subprocesses wrote to their log files,
searched for the values registered in tests/support/sensitive.py. conftest.py wires it in.

While it holds every live metrics registry, it also checks that each exposed series (name and
enumerated label value) is one webhook/metrics.py's TABLE lists, so the README's metrics table,
made from TABLE, cannot fall behind what any test makes regcred expose.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType

from prometheus_client import generate_latest

from tests.fakes.apiserver import FakeApiServer
from tests.support.sensitive import (
    SENSITIVE,
    Registry,
    assert_no_leaks,
    drain_observed,
    register,
    register_credential,
    register_key_json,
)
from webhook import providers
from webhook.ci import command as ci_command
from webhook.ci import tokens as ci_tokens
from webhook.logs import JsonFormatter
from webhook.metrics import Metrics, undocumented

ROOT = Path(__file__).resolve().parents[2]
# Loggers of the tests' own HTTP clients: httpx logs the URL it was asked to get, and some tests
# paste a token into a URL on purpose. regcred itself makes no call through httpx.
_CLIENT_LOGGERS = ("httpx", "httpcore")
# Module constants holding material in test modules: HARBOR_PASSWORD, SECRET_KEY, SESSION_TOKEN...
_SECRET_NAME = re.compile(r"(^|_)(PASSWORD|SECRET|TOKEN|SECRET_KEY|PRIVATE_KEY)$")
_MATERIAL_KEYS = frozenset({"password", "aws_secret_access_key", "aws_session_token", "token", "access_token",
                            "client_secret"})
_LOG_FILE = re.compile(r"(^log$|\.log$)")

# Every Metrics still alive (a module-scoped server's), and those built during the current test,
# held until its check: a test's app is often gone by the time the check runs.
_metrics: weakref.WeakSet[Metrics] = weakref.WeakSet()
_this_test: list[Metrics] = []
_scanned: dict[Path, int] = {}  # subprocess log file -> size when last checked
TALLY: dict[str, int] = {}  # texts checked, by kind, for the end-of-run summary
_KINDS = (("log record", "log records"), ("log file", "subprocess log files"), ("warning", "warnings"),
          ("metrics", "metric scrapes"))


def format_records(records: Iterable[logging.LogRecord]) -> list[tuple[str, str]]:
    """Records as regcred writes them (JSON, ``extra`` fields and tracebacks included)."""
    formatter = JsonFormatter()
    texts = []
    for record in records:
        if record.name.split(".")[0] in _CLIENT_LOGGERS:
            continue
        try:
            line = formatter.format(record)
        except Exception:  # a record whose args do not fit its message: check its parts
            line = f"{record.msg!r} {record.args!r} {vars(record)!r}"
        texts.append((f"log record of {record.name} ({record.msg!s:.60})", line))
    return texts


class Capture(logging.Handler):
    """Every log record (root logger; regcred's own at DEBUG, others at INFO) and Python
    warning of one test, plus what ``observe`` was given meanwhile."""

    def __enter__(self) -> Capture:
        self.records: list[logging.LogRecord] = []
        self._root, self._ours = logging.getLogger(), logging.getLogger("webhook")
        self._levels = (self._root.level, self._ours.level)
        self._root.addHandler(self)
        # REGCRED_HYGIENE_LEVEL=DEBUG: what ``--log-level debug`` would log, SDKs' debug included.
        level = logging.getLevelName(os.environ.get("REGCRED_HYGIENE_LEVEL", "INFO").upper())
        self._root.setLevel(min(self._root.getEffectiveLevel(), level))
        self._ours.setLevel(logging.DEBUG)
        self._catcher = warnings.catch_warnings(record=True)
        self.warned = self._catcher.__enter__()
        drain_observed()
        _this_test.clear()  # a module-scoped server's stay in _metrics while alive
        return self

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __exit__(self, *_) -> None:
        self._catcher.__exit__(None, None, None)
        for caught in self.warned:  # back to pytest, so its warning summary stays complete
            warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno,
                                   source=caught.source)
        self._root.removeHandler(self)
        self._root.setLevel(self._levels[0])
        self._ours.setLevel(self._levels[1])

    def texts(self) -> list[tuple[str, str]]:
        observed = drain_observed()
        texts = format_records(self.records)
        texts += [(f"warning {caught.category.__name__}", str(caught.message)) for caught in self.warned]
        alive = {id(metrics): metrics for metrics in [*_this_test, *_metrics]}
        _this_test.clear()
        texts += [("metrics scrape", _scrape(metrics)) for metrics in alive.values()]
        # While we hold every live registry: each series must be one the metrics table lists.
        self.undocumented = sorted({series for metrics in alive.values() for series in undocumented(metrics.registry)})
        return texts + observed

    def check(self) -> None:
        texts = self.texts()
        _tally(texts)
        assert_no_leaks(texts)
        assert not self.undocumented, f"series missing from webhook/metrics.py TABLE: {self.undocumented}"


def _scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def check_log_files(basetemp: Path, registry: Registry = SENSITIVE) -> None:
    """Log files of ``regcred serve`` subprocesses (``serve.log``, ``log``) under the test tmp
    dirs, those new or grown since the last call."""
    texts = []
    for path in sorted(basetemp.rglob("*")):
        if not _LOG_FILE.search(path.name) or not path.is_file():
            continue
        size = path.stat().st_size
        if _scanned.get(path) == size:
            continue
        _scanned[path] = size
        texts.append((f"log file {path.relative_to(basetemp)}", path.read_text(errors="replace")))
    if registry is SENSITIVE:
        _tally(texts)
    assert_no_leaks(texts, registry)


def _tally(texts: list[tuple[str, str]]) -> None:
    for source, text in texts:
        kind = next((kind for prefix, kind in _KINDS if source.startswith(prefix)), "HTTP bodies")
        TALLY[kind] = TALLY.get(kind, 0) + 1
        TALLY["characters"] = TALLY.get("characters", 0) + len(text)


def summary() -> str:
    """One line for the end of the run: how much was checked against how many values."""
    counted = ", ".join(f"{count} {kind}" for kind, count in sorted(TALLY.items()) if kind != "characters")
    return (f"secret hygiene: {len(SENSITIVE)} credential values registered; checked {counted} "
            f"({TALLY.get('characters', 0) / 1e6:.1f} M characters)")


def register_module_constants(modules: Iterable[ModuleType]) -> None:
    """Material the test modules hold as constants: ``*_PASSWORD = ...``, ``CREDENTIALS = {...}``."""
    for module in modules:
        for name, value in vars(module).items():
            if not name.isupper():
                continue
            if isinstance(value, str) and _SECRET_NAME.search(name):
                register(value, f"{module.__name__}.{name}")
            elif isinstance(value, Mapping):
                _register_mapping(value, f"{module.__name__}.{name}")


def _register_mapping(mapping: Mapping, where: str) -> None:
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            _register_mapping(value, f"{where}[{key!r}]")
        elif key in _MATERIAL_KEYS and isinstance(value, (str, bytes)):
            register(value, f"{where}[{key!r}]")


def install() -> None:
    """Register material wherever the suite makes it, at our own seams (observation only:
    every wrapped call behaves and returns exactly as before).

    * every ``Credential`` built (providers, fakes of the Provider Protocol, test tables);
    * every CI token ``create_token`` makes (fixtures, ``regcred ci-token create`` in-process);
    * every credentials Secret a test puts into the fake API server (``put_object``);
    * every ``Metrics`` built, so its scrape can be checked;
    * the example credentials shipped in ``examples/credentials``.
    """
    _after(providers.Credential, "__init__", lambda args, kwargs, _: register_credential(
        args[0].username, args[0].password, f"password of a Credential for {args[0].username!r}"))
    for module in (ci_tokens, ci_command):  # the command bound its own name at import
        _after(module, "create_token", lambda args, kwargs, made: register(made[0], "CI token"))
    _after(FakeApiServer, "put_object", lambda args, kwargs, _: _register_secret(*args[1:3]))
    _after(Metrics, "__init__", lambda args, kwargs, _: (_metrics.add(args[0]), _this_test.append(args[0])))
    for path in sorted((ROOT / "examples" / "credentials").glob("*/password")):
        register(path.read_text(), f"examples/credentials/{path.parent.name}/password")


def _after(owner: object, name: str, observe: Callable[[tuple, dict, object], None]) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        observe(args, kwargs, result)
        return result

    setattr(owner, name, wrapper)


def _register_secret(resource: str, obj: dict) -> None:
    """The material of a Secret a test placed in the fake API server (credentials, pull Secrets)."""
    if resource != "secrets":
        return
    name = (obj.get("metadata") or {}).get("name")
    values = dict(obj.get("stringData") or {})
    for key, value in (obj.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(value).decode("utf-8")
        except (ValueError, TypeError):
            continue
    for key, value in values.items():
        if key == "key.json":
            register_key_json(value, f"Secret {name} key.json")
        elif key == ".dockerconfigjson":
            _register_dockerconfig(value, f"Secret {name} .dockerconfigjson")
        elif key in _MATERIAL_KEYS:
            register(value, f"Secret {name} key {key}")


def _register_dockerconfig(text: str, what: str) -> None:
    try:
        auths = json.loads(text).get("auths") or {}
    except (ValueError, AttributeError):
        return
    for entry in auths.values() if isinstance(auths, dict) else ():
        if isinstance(entry, dict):
            register(entry.get("password"), what)
            register(entry.get("auth"), what)
