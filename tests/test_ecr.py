"""The ECR provider against moto's server (via the recording front in tests/support/moto.py).

boto3 is pointed at the fake only through ``AWS_ENDPOINT_URL``; the recorded calls show which
identity signed for which region and service, which is what a wrong region or a skipped
AssumeRole would get wrong in a real account.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime

import pytest

from tests.support.fake_tokens import Clock
from tests.support.moto import MOTO_EXPIRES_AT, POD_IDENTITY_KEY_ID, AwsFake, aws, aws_fake  # noqa: F401
from webhook.credentialcache import BACKOFF_MIN, CredentialCache
from webhook.metrics import Metrics
from webhook.providers import CredentialUnavailable
from webhook.providers.ecr import EcrProvider
from webhook.registries import Registry, parse_registries
from webhook.yamlload import ConfigError

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessiontoken//////////wEaDA=="
KEYS = {"aws_access_key_id": KEY_ID.encode(), "aws_secret_access_key": SECRET_KEY.encode()}
HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def ecr(url: str = HOST, **fields) -> Registry:
    return Registry.model_validate({"id": "prod", "url": url, "type": "ecr", "secretRef": "aws-keys", **fields})


def ambient(url: str = HOST, **fields) -> Registry:
    return Registry.model_validate({"id": "prod", "url": url, "type": "ecr", **fields})


# --- the host decides: validation and region -------------------------------------------


@pytest.mark.parametrize(
    ("url", "region"),
    [
        pytest.param(HOST, "eu-west-1", id="commercial"),
        pytest.param("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app", "eu-west-1", id="with-path"),
        pytest.param("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1", id="fips"),
        pytest.param("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "cn-north-1", id="china"),
        pytest.param("123456789012.dkr-ecr.ap-southeast-2.on.aws", "ap-southeast-2", id="dual-stack"),
        pytest.param("public.ecr.aws/acme", "us-east-1", id="public"),
    ],
)
def test_ecr_hosts_and_their_region(url: str, region: str) -> None:
    assert ambient(url).aws_region == region


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("12345678901.dkr.ecr.eu-west-1.amazonaws.com", id="eleven-digit-account"),
        pytest.param("123456789012.dkr.ecr.eu-west-1.amazonaws.org", id="wrong-domain"),
        pytest.param("123456789012.ecr.eu-west-1.amazonaws.com", id="no-dkr"),
        pytest.param("ecr.eu-west-1.amazonaws.com", id="api-host"),
        pytest.param("docker.io/acme", id="docker-hub"),
        pytest.param("evil.com/123456789012.dkr.ecr.eu-west-1.amazonaws.com", id="ecr-host-in-path"),
        pytest.param("public.ecr.aws.evil.com", id="public-lookalike"),
    ],
)
def test_non_ecr_hosts_are_config_errors_naming_the_field(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_registries(f"registries:\n  - id: prod\n    url: {url}\n    type: ecr\n")
    assert raised.value.errors == [
        "registries[0].url: type ecr needs an ECR host (<account>.dkr.ecr.<region>.amazonaws.com, "
        "<account>.dkr-ecr.<region>.on.aws or public.ecr.aws)"
    ]


# --- static keys, sessions, regions --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "region"),
    [
        pytest.param(HOST, "eu-west-1", id="commercial"),
        pytest.param("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "cn-north-1", id="china"),
        pytest.param("123456789012.dkr-ecr.ap-southeast-2.on.aws", "ap-southeast-2", id="dual-stack"),
    ],
)
def test_static_keys_sign_for_the_registry_region(aws: AwsFake, url: str, region: str) -> None:
    before = datetime.now(UTC)
    credential = EcrProvider().mint(ecr(url), KEYS)
    assert (credential.username, credential.password) == ("AWS", "123456789012-auth-token")
    assert 11.9 * 3600 < (credential.expires_at - before).total_seconds() < 12.1 * 3600
    assert credential.expires_at.tzinfo is UTC
    [call] = aws.calls
    assert (call.operation, call.service, call.region, call.access_key_id) == (
        "GetAuthorizationToken", "ecr", region, KEY_ID)
    assert not call.session_token


def test_session_token_and_trailing_newlines_from_kubectl(aws: AwsFake) -> None:
    material = {key: value + b"\n" for key, value in KEYS.items()}
    material["aws_session_token"] = SESSION_TOKEN.encode() + b"\n"
    EcrProvider().mint(ecr(), material)
    [call] = aws.calls
    assert call.access_key_id == KEY_ID and call.session_token


def test_ecr_public_uses_its_own_api_in_us_east_1(aws: AwsFake) -> None:
    credential = EcrProvider().mint(ecr("public.ecr.aws/acme"), KEYS)
    assert (credential.username, credential.password) == ("AWS", f"ecr-public-token-for-{KEY_ID}")
    [call] = aws.calls
    assert (call.service, call.region) == ("ecr-public", "us-east-1")


# --- assume-role and the default chain -------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"roleArn": "arn:aws:iam::222222222222:role/puller"}, {}, id="role"),
        pytest.param(
            {"roleArn": "arn:aws:iam::222222222222:role/puller", "externalId": "regcred-ext-7"},
            {"ExternalId": "regcred-ext-7"}, id="role-with-external-id",
        ),
    ],
)
def test_assume_role_first_then_ecr_with_the_role_session(aws: AwsFake, options: dict, expected: dict) -> None:
    credential = EcrProvider().mint(ecr(ecr=options), KEYS)
    # moto issues the token in the assumed role's account: proof the role's keys signed.
    assert credential.password == "222222222222-auth-token"
    assume, token = aws.calls
    assert (assume.operation, assume.service, assume.region, assume.access_key_id) == (
        "AssumeRole", "sts", "eu-west-1", KEY_ID)
    assert assume.params["RoleArn"] == options["roleArn"]
    assert assume.params["RoleSessionName"] == "regcred-prod"
    assert {k: assume.params[k] for k in expected} == expected and ("ExternalId" in assume.params) == bool(expected)
    assert token.access_key_id.startswith("ASIA") and token.session_token


def test_default_chain_environment_keys(aws: AwsFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    EcrProvider().mint(ambient(), None)
    assert [call.access_key_id for call in aws.calls] == ["AKIAENVIRONMENTKEY01"]


def test_default_chain_irsa_web_identity(aws: AwsFake, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::333333333333:role/regcred-irsa")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    credential = EcrProvider().mint(ambient(), None)
    assert credential.password == "333333333333-auth-token"
    web_identity, token = aws.calls
    assert web_identity.operation == "AssumeRoleWithWebIdentity"
    assert web_identity.params["WebIdentityToken"] == token_file.read_text()
    assert token.session_token


def test_default_chain_eks_pod_identity(aws: AwsFake, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-identity-projected-token")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", aws.pod_identity_url)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
    EcrProvider().mint(ambient(), None)
    agent, token = aws.calls
    assert agent.params["Authorization"] == "pod-identity-projected-token"
    assert token.access_key_id == POD_IDENTITY_KEY_ID and token.session_token


def test_default_chain_then_assume_role(aws: AwsFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    credential = EcrProvider().mint(ambient(ecr={"roleArn": "arn:aws:iam::444444444444:role/x"}), None)
    assert credential.password == "444444444444-auth-token"
    assert aws.operations() == ["AssumeRole", "GetAuthorizationToken"]


# --- failures: CredentialUnavailable with the AWS code, never material -------------------


@pytest.mark.parametrize(
    ("registry", "operation", "code", "status"),
    [
        pytest.param(ecr(), "GetAuthorizationToken", "AccessDeniedException", 400, id="ecr-denied"),
        pytest.param(ecr(), "GetAuthorizationToken", "UnrecognizedClientException", 400, id="ecr-bad-key"),
        pytest.param(ecr("public.ecr.aws/acme"), "GetAuthorizationToken", "AccessDeniedException", 400,
                     id="public-denied"),
        pytest.param(ecr(ecr={"roleArn": "arn:aws:iam::222222222222:role/x"}), "AssumeRole", "AccessDenied", 403,
                     id="sts-denied"),
        pytest.param(ecr(ecr={"roleArn": "arn:aws:iam::222222222222:role/x"}), "AssumeRole", "ExpiredToken", 400,
                     id="sts-expired"),
    ],
)
def test_aws_errors_carry_the_code_not_the_message(aws: AwsFake, registry: Registry, operation: str, code: str,
                                                   status: int) -> None:
    aws.fail(operation, code, status=status, message=f"key {KEY_ID} secret {SECRET_KEY} rejected")
    with pytest.raises(CredentialUnavailable) as raised:
        EcrProvider().mint(registry, KEYS)
    assert str(raised.value) == f"prod: AWS {operation} failed: {code}"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"authorizationData": []}, id="no-data"),
        pytest.param({"authorizationData": [{"authorizationToken": "%%%", "expiresAt": 2e9}]}, id="not-base64"),
        pytest.param({"authorizationData": [{"authorizationToken": "bm8tY29sb24=", "expiresAt": 2e9}]}, id="no-colon"),
        pytest.param({"authorizationData": [{"authorizationToken": "QVdTOg==", "expiresAt": 2e9}]},
                     id="empty-password"),
        pytest.param({"authorizationData": [{"authorizationToken": "QVdTOng="}]}, id="no-expiry"),
    ],
)
def test_malformed_answers_are_unavailable(aws: AwsFake, payload: dict) -> None:
    aws.respond("GetAuthorizationToken", payload)
    with pytest.raises(CredentialUnavailable, match="^prod: malformed ECR authorization data$"):
        EcrProvider().mint(ecr(), KEYS)


def test_unreachable_endpoint_names_the_connection_error(aws: AwsFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # boto3's own knob; no retries to wait out
    with pytest.raises(CredentialUnavailable, match="^prod: AWS call failed: EndpointConnectionError$"):
        EcrProvider().mint(ecr(), KEYS)


@pytest.mark.parametrize(
    ("env", "calls"),
    [
        pytest.param({}, 3, id="standard-mode-by-default"),
        pytest.param({"AWS_MAX_ATTEMPTS": "2"}, 2, id="max-attempts-wins"),
        pytest.param({"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "1"}, 1, id="retry-mode-wins"),
    ],
)
def test_a_503_is_retried_in_standard_mode(aws: AwsFake, monkeypatch: pytest.MonkeyPatch, env: dict,
                                           calls: int) -> None:
    """botocore's default is still legacy mode (5 attempts, up to 15 s of sleeps): standard makes 3."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    aws.outage = "unavailable"
    expected = "^prod: AWS GetAuthorizationToken failed: ServiceUnavailableException$"
    with pytest.raises(CredentialUnavailable, match=expected):
        EcrProvider().mint(ecr(), KEYS)
    assert aws.operations() == ["GetAuthorizationToken"] * calls


def test_service_specific_endpoint_variables_win(aws: AwsFake, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_ENDPOINT_URL_ECR / _STS (VPC endpoints) are boto3's own; nothing in regcred reads them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", aws.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", aws.url)
    EcrProvider().mint(ecr(ecr={"roleArn": "arn:aws:iam::222222222222:role/puller"}), KEYS)
    assert aws.operations() == ["AssumeRole", "GetAuthorizationToken"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_credentials_anywhere(aws: AwsFake) -> None:
    with pytest.raises(CredentialUnavailable, match="^prod: AWS call failed: NoCredentialsError$"):
        EcrProvider().mint(ambient(), None)
    assert aws.calls == []


# --- through the token cache: moto's 2015 expiry and the 12-hour refresh ---------------------


class Keys:
    def read(self, name: str):
        return KEYS if name == "aws-keys" else None


def test_moto_expired_token_is_used_logged_and_not_reminted_in_a_loop(
    aws: AwsFake, caplog: pytest.LogCaptureFixture
) -> None:
    aws.token_lifetime = None  # moto's own answer: expiresAt 2015-01-01
    clock, metrics = Clock.starting_now(), Metrics()
    cache = CredentialCache({"ecr": EcrProvider()}, Keys(), metrics, clock=clock)

    async def scenario() -> list[str]:
        passwords = [(await cache.get(ecr())).password for _ in range(25)]
        clock.now += BACKOFF_MIN
        passwords.append((await cache.get(ecr())).password)
        return passwords

    with caplog.at_level(logging.INFO, logger="webhook.credentialcache"):
        passwords = asyncio.run(scenario())
    assert passwords == ["123456789012-auth-token"] * 26
    assert aws.operations() == ["GetAuthorizationToken"] * 2  # one mint, then one after the backoff
    sample = metrics.registry.get_sample_value
    assert sample("regcred_token_mints_total", {"registry": "prod", "outcome": "expired"}) == 2
    assert sample("regcred_token_expiry_timestamp_seconds", {"registry": "prod"}) == MOTO_EXPIRES_AT
    assert "already expired" in caplog.text
    assert SECRET_KEY not in caplog.text and "auth-token" not in caplog.text


def test_twelve_hour_token_is_refreshed_after_eight_hours(aws: AwsFake) -> None:
    clock = Clock.starting_now()
    cache = CredentialCache({"ecr": EcrProvider()}, Keys(), Metrics(), clock=clock)

    async def scenario() -> None:
        await cache.get(ecr())
        clock.now += 8 * 3600 - 60
        await cache.get(ecr())
        assert aws.operations() == ["GetAuthorizationToken"]
        clock.now += 120  # past 2/3 of the life (the fake dates expiresAt by the real clock)
        await cache.get(ecr())
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))

    asyncio.run(scenario())
    assert aws.operations() == ["GetAuthorizationToken"] * 2
