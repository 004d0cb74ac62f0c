"""The credential values tests create, and a checker that finds them in text that must not hold them.

Fixtures and fakes call ``register`` for every password, token and key they make or hand out
(tests/support/hygiene.py also registers every ``Credential`` and CI token made during the
run). ``leaks(text)`` then says which registered values appear in a log line, warning, metric
scrape or error body; ``observe`` hands such text (an HTTP error body) to the current test's check.

A value is searched for in the forms it could leak in: as is, JSON-escaped (the JSON log
formatter escapes quotes, backslashes and newlines), each line of a multi-line value (a PEM
key), and base64-encoded at each of the three byte alignments (a dockerconfigjson ``auth`` or a
whole base64 Secret payload carries the value at any offset), standard and URL-safe alphabet.
Values shorter than ``MIN_LENGTH`` are not registered: they cannot be told from ordinary text.

Reports never repeat a value: they name what it was (``what``) and the form it was found in.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick  # one pass over a big text whatever the number of values (fuzz tests show us 10,000 bodies)
import httpx

MIN_LENGTH = 8
# Texts from this length on are searched with one automaton pass instead of one scan per form.
_BIG_TEXT = 256 * 1024
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
        self._built: tuple[object, int] | None = None  # (Aho-Corasick automaton, forms it holds)
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
            if len(text) >= _BIG_TEXT:
                found_forms = {form for _, form in self._automaton().iter(text)}
            else:
                found_forms = {form for form in self._forms if form in text}
            labels = [self._forms[form] for form in found_forms]
        return list({(what, name): Leak(what, name, source) for what, name in labels}.values())

    def _automaton(self):
        # Rebuilt only when values were added since: building costs ~25 us per form.
        if self._built is None or self._built[1] != len(self._forms):
            automaton = ahocorasick.Automaton()
            for form in self._forms:
                automaton.add_word(form, form)
            automaton.make_automaton()
            self._built = (automaton, len(self._forms))
        return self._built[0]


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

_observed: list[tuple[str, str]] = []
_observed_lock = threading.Lock()


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


def drain_observed() -> list[tuple[str, str]]:
    with _observed_lock:
        observed = list(_observed)
        _observed.clear()
    return observed


def assert_no_leaks(texts: Iterable[tuple[str, str]], registry: Registry = SENSITIVE) -> None:
    """Fail naming every registered value found in ``texts`` ((source, text) pairs)."""
    texts = list(texts)
    # One search over everything first; sources are looked for only after a hit.
    if not registry.leaks("\x00".join(text for _, text in texts), "any"):
        return
    leaks = [leak for source, text in texts for leak in registry.leaks(text, source)]
    if leaks:
        raise AssertionError("secret hygiene: credential values leaked:\n  " + "\n  ".join(map(str, leaks)))
