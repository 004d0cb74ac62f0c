"""The credential values tests create, and a checker that finds them in text that must not hold them.

Fixtures and fakes call ``register`` for every password, token and key they make or hand out
(the conftest also registers every ``Credential`` built during a test). ``leaks(text)`` then
says which registered values appear in a log line, warning, metric scrape or error body.

A value is searched for in the forms it could leak in: as is, JSON-escaped (the JSON log
formatter escapes quotes, backslashes and newlines), each line of a multi-line value (a PEM
key), and base64-encoded at each of the three byte alignments (a dockerconfigjson ``auth`` or a
whole base64 Secret payload carries the value at any offset), standard and URL-safe alphabet.
Values shorter than ``MIN_LENGTH`` are not registered: they cannot be told from ordinary text.

Reports never repeat a value: they name what it was (``what``) and the form it was found in.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import threading
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx

from webhook import citokens, providers
from webhook.logs import JsonFormatter
from webhook.metrics import Metrics

MIN_LENGTH = 8
# A PEM body line is 64 base64 characters; shorter lines (the last one, headers) are still
# distinctive above this length, and shorter fragments of a key are not worth a report.
_MIN_LINE = 16


@dataclass(frozen=True)
class Leak:
    what: str  # e.g. "ECR token minted by moto"
    form: str  # raw, json-escaped, line, base64
    source: str  # where the text came from: "log", "metrics", "body of POST /mutate", ...

    def __str__(self) -> str:
        return f"{self.what} ({self.form}) in {self.source}"


class Registry:
    """Registered values, as the forms to search for; thread-safe (fakes register from their threads)."""

    def __init__(self) -> None:
        self._forms: dict[str, tuple[str, str]] = {}  # searchable form -> (what, form name)
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: str) -> bool:
        return value in self._values

    def register(self, value: str | bytes | None, what: str) -> None:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return  # binary material never reaches a text log as itself
        if not value:
            return
        value = value.strip()
        if len(value) < MIN_LENGTH:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            for form, name in _forms(value):
                self._forms.setdefault(form, (what, name))

    def register_credential(self, username: str, password: str, what: str) -> None:
        """A registry login: the password, and ``base64(user:password)``, the dockerconfigjson ``auth``."""
        self.register(password, what)
        if password and len(password) >= MIN_LENGTH:
            self.register(base64.b64encode(f"{username}:{password}".encode()).decode(), f"{what} (auth)")

    def register_key_json(self, text: str, what: str) -> None:
        """A Google service-account key.json: the whole text, its private key and key id."""
        self.register(text, what)
        try:
            info = json.loads(text)
        except ValueError:
            return
        if isinstance(info, dict):
            self.register(info.get("private_key"), f"{what}: private_key")
            self.register(info.get("private_key_id"), f"{what}: private_key_id")

    def leaks(self, text: str, source: str) -> list[Leak]:
        with self._lock:
            forms = list(self._forms.items())
        found: dict[tuple[str, str], Leak] = {}
        for form, (what, name) in forms:
            if form in text:
                found.setdefault((what, name), Leak(what, name, source))
        return list(found.values())


def _forms(value: str) -> list[tuple[str, str]]:
    forms = [(value, "raw")]
    escaped = json.dumps(value)[1:-1]
    if escaped != value:
        forms.append((escaped, "json-escaped"))
    forms.extend(_base64_forms(value))
    for line in value.splitlines() if "\n" in value else ():
        line = line.strip()
        if len(line) >= _MIN_LINE and not line.startswith("-----"):
            forms.append((line, "line"))
            forms.extend(_base64_forms(line))
    return forms


def _base64_forms(value: str) -> list[tuple[str, str]]:
    """The base64 characters that depend only on ``value``, wherever it sits in an encoded stream."""
    raw = value.encode("utf-8")
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        # Character i carries bits [6i, 6i+6); keep those wholly inside the value's bits.
        first = -(-8 * offset // 6)
        last = (8 * (offset + len(raw))) // 6
        core = encoded[first:last]
        if len(core) >= MIN_LENGTH:
            forms.append((core, "base64"))
            urlsafe = core.replace("+", "-").replace("/", "_")
            if urlsafe != core:
                forms.append((urlsafe, "base64url"))
    return forms


# One registry for the whole session: session-scoped fixtures register once, every test is checked.
SENSITIVE = Registry()
register = SENSITIVE.register
register_credential = SENSITIVE.register_credential
register_key_json = SENSITIVE.register_key_json

ROOT = Path(__file__).resolve().parents[2]
# Loggers of the tests' own HTTP clients: httpx logs the URL it was asked to get, and some tests
# paste a token into a URL on purpose. regcred itself makes no call through httpx.
_CLIENT_LOGGERS = ("httpx", "httpcore")
# Module constants holding material in test modules: HARBOR_PASSWORD, SECRET_KEY, SESSION_TOKEN...
_SECRET_NAME = re.compile(r"(^|_)(PASSWORD|SECRET|TOKEN|SECRET_KEY|PRIVATE_KEY)$")
_MATERIAL_KEYS = frozenset({"password", "aws_secret_access_key", "aws_session_token", "token", "access_token"})
_LOG_FILE = re.compile(r"(^log$|\.log$)")

_observed: list[tuple[str, str]] = []
_observed_lock = threading.Lock()
_metrics: weakref.WeakSet[Metrics] = weakref.WeakSet()
_scanned: dict[Path, int] = {}  # subprocess log file -> size when last checked


def observe(source: str, text: str) -> None:
    """Hand text that must hold no credential (an error body...) to the current test's check."""
    with _observed_lock:
        _observed.append((source, text))


def observe_response(response: httpx.Response) -> None:
    """An httpx response hook: error bodies, and every /mutate answer (warnings included)."""
    if response.status_code < 400 and not response.request.url.path.endswith("/mutate"):
        return
    response.read()
    # Method and status only: the path is caller input and may itself carry a pasted token.
    observe(f"{response.request.method} response body (HTTP {response.status_code})", response.text)


def assert_no_leaks(texts: Iterable[tuple[str, str]], registry: Registry = SENSITIVE) -> None:
    """Fail naming every registered value found in ``texts`` ((source, text) pairs)."""
    leaks = [leak for source, text in texts for leak in registry.leaks(text, source)]
    if leaks:
        raise AssertionError("secret hygiene: credential values leaked:\n  " + "\n  ".join(map(str, leaks)))


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
        with _observed_lock:
            _observed.clear()
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
        with _observed_lock:
            observed = list(_observed)
            _observed.clear()
        texts = format_records(self.records)
        texts += [(f"warning {caught.category.__name__}", str(caught.message)) for caught in self.warned]
        texts += [("metrics scrape", _scrape(metrics)) for metrics in list(_metrics)]
        return texts + observed

    def check(self) -> None:
        assert_no_leaks(self.texts())


def _scrape(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

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
    assert_no_leaks(texts, registry)


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
    * every ``Metrics`` built, so its scrape can be checked;
    * the example credentials shipped in ``examples/credentials``.
    """
    credential_init = providers.Credential.__init__

    @functools.wraps(credential_init)
    def credential(self, *args, **kwargs) -> None:
        credential_init(self, *args, **kwargs)
        register_credential(self.username, self.password, f"password of a Credential for {self.username!r}")

    metrics_init = Metrics.__init__

    @functools.wraps(metrics_init)
    def metrics(self) -> None:
        metrics_init(self)
        _metrics.add(self)

    create_token = citokens.create_token

    @functools.wraps(create_token)
    def token(*args, **kwargs):
        made = create_token(*args, **kwargs)
        register(made[0], "CI token")
        return made

    providers.Credential.__init__ = credential
    Metrics.__init__ = metrics
    citokens.create_token = token
    for path in sorted((ROOT / "examples" / "credentials").glob("*/password")):
        register(path.read_text(), f"examples/credentials/{path.parent.name}/password")
