"""The secret-hygiene check itself: it finds registered values in every form and place they
could leak, and it is wired into the suite (every test runs under it, see conftest.py).

Values here are registered in a private ``Registry``: the suite-wide check (which knows only
the global one) must not fail these tests for the leaks they stage on purpose.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import warnings

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import sensitive
from tests.support.hygiene import Capture, check_log_files, format_records
from tests.support.moto import aws, aws_fake  # noqa: F401
from tests.support.sensitive import Registry, assert_no_leaks, register
from webhook.logs import JsonFormatter
from webhook.metrics import Metrics
from webhook.providers import Credential

VALUE = "hygiene-probe-Pa55w0rd/+=x?>~"  # "?>~" puts + and / into its base64
# A module constant named like material: registered at collection, as every test module's are.
PROBE_PASSWORD = "probe-module-constant-password"

log = logging.getLogger("webhook.hygiene_probe")


@pytest.fixture
def private() -> Registry:
    registry = Registry()
    registry.register(VALUE, "probe password")
    return registry


def _dockerconfig(password: str) -> str:
    auth = base64.b64encode(f"robot$ci:{password}".encode()).decode()
    return json.dumps({"auths": {"harbor.example.com": {"username": "robot$ci", "password": password, "auth": auth}}})


# (text holding the value somehow, form reported)
FORMS = [
    pytest.param(f"msg with {VALUE} inside", "raw", id="raw"),
    pytest.param(json.dumps({"reason": f'said "{VALUE}\\"'}), "raw", id="in-json"),
    pytest.param(base64.b64encode(VALUE.encode()).decode(), "base64", id="base64-offset-0"),
    pytest.param(base64.b64encode(b"x" + VALUE.encode()).decode(), "base64", id="base64-offset-1"),
    pytest.param(base64.b64encode(b"xy" + VALUE.encode() + b"z").decode(), "base64", id="base64-offset-2"),
    pytest.param(base64.urlsafe_b64encode(b"xy" + VALUE.encode()).decode(), "base64url", id="base64url"),
    pytest.param(json.loads(_dockerconfig(VALUE))["auths"]["harbor.example.com"]["auth"], "base64", id="auth"),
    pytest.param(base64.b64encode(_dockerconfig(VALUE).encode()).decode(), "base64", id="secret-payload"),
]


@pytest.mark.parametrize(("text", "form"), FORMS)
def test_every_form_of_a_registered_value_is_found(private, text, form):
    leaks = private.leaks(text, "probe")
    assert [leak.what for leak in leaks] and {leak.form for leak in leaks} >= {form}
    with pytest.raises(AssertionError) as failed:
        assert_no_leaks([("probe", text)], private)
    assert "probe password" in str(failed.value) and VALUE not in str(failed.value)  # never repeated


@pytest.mark.parametrize("text", [
    pytest.param("nothing to see", id="plain"),
    pytest.param(VALUE[:-1], id="a-prefix-only"),
    pytest.param(base64.b64encode(VALUE[:-3].encode()).decode(), id="base64-of-a-prefix"),
])
def test_text_without_the_value_passes(private, text):
    assert_no_leaks([("probe", text)], private)


def test_short_values_are_not_registered():
    registry = Registry()
    registry.register("short", "too short")
    registry.register("", "empty")
    registry.register(None, "none")
    assert len(registry) == 0 and registry.leaks("short short", "probe") == []


def test_a_pem_key_is_found_line_by_line_even_json_escaped():
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(
        ["QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" + str(i) * 5 for i in range(3)])
    pem += "\n-----END PRIVATE KEY-----\n"
    registry = Registry()
    registry.register_key_json(json.dumps({"type": "service_account", "private_key": pem}), "key.json")
    one_line = pem.splitlines()[2]
    assert {leak.form for leak in registry.leaks(f"... {one_line} ...", "probe")} == {"line"}
    assert registry.leaks(json.dumps({"key": pem}), "probe")


@given(value=st.text(min_size=sensitive.MIN_LENGTH, max_size=40).filter(lambda v: v.strip() == v and len(v) >= 8),
       before=st.binary(max_size=7), after=st.binary(max_size=7))
def test_base64_forms_match_at_any_offset(value, before, after):
    registry = Registry()
    registry.register(value, "anything")
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        assert registry.leaks(encode(before + value.encode() + after).decode(), "probe")
    assert registry.leaks(json.dumps({"x": f"<{value}>"}), "probe")


def test_the_checker_catches_a_value_logged_warned_scraped_or_in_an_error_body(private, tmp_path):
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": f"cannot use {VALUE}"})

    metrics = Metrics()
    client = httpx.Client(transport=httpx.MockTransport(refuse), event_hooks={"response": [sensitive.observe_response]})
    with pytest.warns(UserWarning), Capture() as capture:
        log.info("logged via an extra field", extra={"detail": VALUE})
        log.debug("logged at debug: %s", VALUE)
        warnings.warn(f"warned about {VALUE}", UserWarning, stacklevel=1)
        metrics.ci_requests.labels(VALUE, "ok").inc()
        client.get("http://probe.invalid/registries/x/creds")
    sources = [source for source, text in capture.texts() if private.leaks(text, source)]
    assert [s for s in sources if s.startswith("log record")] == [
        "log record of webhook.hygiene_probe (logged via an extra field)",
        "log record of webhook.hygiene_probe (logged at debug: %s)",
    ]
    assert "warning UserWarning" in sources and "metrics scrape" in sources
    assert "GET response body (HTTP 500)" in sources
    with pytest.raises(AssertionError, match="probe password"):
        assert_no_leaks(format_records(capture.records), private)


def test_the_checker_catches_a_value_in_a_subprocess_log_file(private, tmp_path):
    subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write('token {VALUE}\\n')"],
                   stderr=(tmp_path / "serve.log").open("wb"), check=True)
    with pytest.raises(AssertionError, match=r"probe password \(raw\) in log file .*serve\.log"):
        check_log_files(tmp_path, registry=private)


def test_the_suite_registers_credentials_ci_tokens_examples_and_constants():
    from webhook.ci.tokens import create_token

    Credential("someone", "a-credential-built-anywhere")
    token, _ = create_token("hygiene-bot")
    for value in ("a-credential-built-anywhere", base64.b64encode(b"someone:a-credential-built-anywhere").decode(),
                  token, "example-not-a-real-password", "example-not-a-real-token", PROBE_PASSWORD):
        assert value in sensitive.SENSITIVE


def test_a_logged_exception_does_not_carry_its_message(private):
    try:
        raise RuntimeError(f"boom {VALUE}")
    except RuntimeError:
        record = logging.LogRecord("webhook.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert not private.leaks(JsonFormatter().format(record), "log")


def test_a_big_text_is_searched_the_same_way(private):
    filler = "x" * (sensitive._BIG_TEXT + 10)
    assert [leak.form for leak in private.leaks(filler + VALUE, "big")] == ["raw"]
    assert private.leaks(filler, "big") == []
    private.register("registered-after-the-first-search", "later")
    assert [leak.what for leak in private.leaks(filler + "registered-after-the-first-search", "big")] == ["later"]


def test_secrets_put_into_the_fake_api_server_are_registered():
    from tests.fakes.apiserver import FakeApiServer
    from tests.support.kube import b64, credentials_secret

    with FakeApiServer() as api:
        api.add_namespace("regcred")
        api.put_object("secrets", credentials_secret("hub-creds", "bot", "put-into-the-fake-api"), "regcred")
    assert "put-into-the-fake-api" in sensitive.SENSITIVE
    assert b64("put-into-the-fake-api") not in sensitive.SENSITIVE  # the value, not its encoding


_DEBUG_MINT = """
from webhook import logs
from webhook.providers.ecr import EcrProvider
from webhook.registries import Registry

logs.configure("debug")
registry = Registry.model_validate({"id": "prod", "url": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                                    "type": "ecr", "secretRef": "aws-keys"})
EcrProvider().mint(registry, {"aws_access_key_id": b"AKIADEBUGMODETEST001",
                              "aws_secret_access_key": b"debug-mode-secret-key"})
"""


def test_debug_logging_does_not_print_sdk_bodies(aws):  # noqa: F811
    register("debug-mode-secret-key", "AWS secret key given to a debug-mode mint")
    ran = subprocess.run([sys.executable, "-c", _DEBUG_MINT], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert_no_leaks([("stderr of a mint at --log-level debug", ran.stderr)])
