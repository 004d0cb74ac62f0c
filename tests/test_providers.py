"""One contract suite, run over every credential provider through a parametrized fixture.

Whatever the source - static Secret, ECR (keys, session, assumed role, Public, the default
chain), Google (access token, ADC, ``_json_key``), ACR (service principal, workload identity)
- a provider returns a Credential with a
username, a password and a sane expiry, and for missing, garbled or refused material raises
CredentialUnavailable, never anything else, with a message that names the registry and
never quotes the secret material.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.support.entra import Azure, azure, azure_servers  # noqa: F401
from tests.support.google_token import GoogleTokenServer, google, google_token_server  # noqa: F401
from tests.support.moto import AwsFake, aws, aws_fake  # noqa: F401
from webhook.providers import Credential, CredentialUnavailable, Provider
from webhook.providers.basic import BasicProvider
from webhook.providers.builtin import builtin_providers
from webhook.registries import Registry

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessiontoken0123456789"
AWS_KEYS = {"aws_access_key_id": KEY_ID.encode(), "aws_secret_access_key": SECRET_KEY.encode()}
ECR_HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
HOUR = 3600.0


@dataclass
class Case:
    provider: Provider
    registry: Registry
    material: Mapping[str, bytes] | None
    secrets: tuple[str, ...]  # must never appear in an error message
    lifetime: tuple[float, float] | None  # expected seconds to expiry; None: long-lived
    garbled: tuple[Mapping[str, bytes], ...] = ()
    refuse: Callable[[], None] | None = None  # make the cloud refuse the next mint, quoting secrets


def _registry(**fields) -> Registry:
    return Registry.model_validate({"id": "contract", **fields})


def _basic(aws: AwsFake, google: GoogleTokenServer, monkeypatch, tmp_path, azure: Azure) -> Case:
    return Case(
        BasicProvider(),
        _registry(url="harbor.example.com/platform", type="basic", secretRef="harbor"),
        {"username": b"robot$ci", "password": b"hunter2-basic-secret"},
        ("hunter2-basic-secret",),
        None,
        garbled=({"username": b"\xff\xfe", "password": b"hunter2-basic-secret"},
                 {"username": b"robot$ci", "password": b""}),
    )


def _ecr(url: str = ECR_HOST, material=AWS_KEYS, **fields) -> Callable[..., Case]:
    def build(aws: AwsFake, google: GoogleTokenServer, monkeypatch, tmp_path, azure: Azure) -> Case:
        operation = "AssumeRole" if "ecr" in fields else "GetAuthorizationToken"
        code = "AccessDenied" if operation == "AssumeRole" else "UnrecognizedClientException"
        return Case(
            builtin_providers()["ecr"],
            _registry(url=url, type="ecr", secretRef="aws-keys", **fields),
            material,
            (SECRET_KEY, SESSION_TOKEN),
            (11.9 * HOUR, 12.1 * HOUR),
            garbled=(
                {"aws_access_key_id": b"not a key id", "aws_secret_access_key": SECRET_KEY.encode()},
                {"aws_access_key_id": "AKIAÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉ".encode(), "aws_secret_access_key": SECRET_KEY.encode()},
                {"aws_access_key_id": KEY_ID.encode(), "aws_secret_access_key": f"{SECRET_KEY} {SECRET_KEY}".encode()},
                {"aws_access_key_id": KEY_ID.encode(), "aws_secret_access_key": SECRET_KEY.encode(),
                 "aws_session_token": f"{SESSION_TOKEN}\n{SESSION_TOKEN}".encode()},
                {"aws_secret_access_key": SECRET_KEY.encode()},
            ),
            refuse=lambda: aws.fail(operation, code, status=403, message=f"bad {SECRET_KEY} {SESSION_TOKEN}"),
        )

    return build


def _ecr_default_chain(aws: AwsFake, google: GoogleTokenServer, monkeypatch, tmp_path, azure: Azure) -> Case:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    return Case(
        builtin_providers()["ecr"], _registry(url=ECR_HOST, type="ecr"), None, (SECRET_KEY,),
        (11.9 * HOUR, 12.1 * HOUR),
        refuse=lambda: aws.fail("GetAuthorizationToken", "AccessDeniedException", message=f"no {SECRET_KEY}"),
    )


def _gcr(mode: str | None) -> Callable[..., Case]:
    def build(aws: AwsFake, google: GoogleTokenServer, monkeypatch, tmp_path, azure: Azure) -> Case:
        key = google.new_key()
        pem_body = key.private_key_pem.splitlines()[1]
        # The local endpoint stands in for Google's: allowed as a private one.
        extra = {"gcr": {"allowedTokenUris": [google.token_uri], **({"mode": mode} if mode else {})}}
        return Case(
            builtin_providers()["gcr"],
            _registry(url="europe-docker.pkg.dev/acme/images", type="gcr", secretRef="gcp-key", **extra),
            {"key.json": key.text.encode()},
            (pem_body,),
            None if mode == "jsonKey" else (HOUR - 120, HOUR + 60),
            garbled=(
                {"key.json": b"{}"},
                {"key.json": key.text.encode()[: len(key.text) // 2]},
                {"key.json": key.text.replace(pem_body, pem_body[::-1]).encode()},
                {"key.json": b"\x89PNG\r\n" + pem_body.encode()},
            ),
            refuse=None if mode == "jsonKey" else (lambda: google.refuse_next("invalid_grant", f"revoked {pem_body}")),
        )

    return build


def _gcr_adc(aws: AwsFake, google: GoogleTokenServer, monkeypatch, tmp_path, azure: Azure) -> Case:
    key = google.new_key()
    path = tmp_path / "adc.json"
    path.write_text(key.text)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return Case(
        builtin_providers()["gcr"], _registry(url="gcr.io/acme", type="gcr"), None,
        (key.private_key_pem.splitlines()[1],), (HOUR - 120, HOUR + 60),
        refuse=lambda: google.refuse_next("unauthorized_client", "nope"),
    )


def _acr(*, tenant_option: bool = False) -> Callable[..., Case]:
    def build(aws: AwsFake, google: GoogleTokenServer, monkeypatch, tmp_path, azure: Azure) -> Case:
        app = azure.entra.service_principal()
        keys = {"tenant_id": app.tenant.encode(), "client_id": app.client_id.encode(),
                "client_secret": app.secret.encode()}
        options = {"tenantId": app.tenant} if tenant_option else {}
        if tenant_option:  # the registry entry names the tenant; the Secret need not
            del keys["tenant_id"]
        good = dict(keys)

        def rotate() -> None:  # the secret was rotated in Entra; the Secret still holds the old one
            app.secret = "sp~rotated-" + app.secret

        return Case(
            builtin_providers()["acr"],
            _registry(url="contoso.azurecr.io/team-a", type="acr", secretRef="acr-sp",
                      **({"acr": options} if options else {})),
            keys,
            (app.secret,),
            (3 * HOUR - 60, 3 * HOUR + 5),
            garbled=(
                {**good, "client_id": b"not-a-guid"},
                {**good, "client_secret": "sp~\u00e9t\u00e9".encode()},
                {**good, "client_secret": app.secret.encode() + b" " + app.secret.encode()},
                {**good, "client_secret": b"\xff\xfe" + app.secret.encode()},
                {**good, "client_id": b"11111111-2222-3333-4444-555555555555"},  # no such app
                {key: value for key, value in good.items() if key != "client_secret"},
            ),
            refuse=rotate,
        )

    return build


def _acr_workload_identity(aws: AwsFake, google: GoogleTokenServer, monkeypatch, tmp_path, azure: Azure) -> Case:
    subject = "system:serviceaccount:regcred:regcred"
    app = azure.entra.federated_app(subject)
    token = azure.entra.service_account_token(subject)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(token)
    monkeypatch.setenv("AZURE_CLIENT_ID", app.client_id)
    monkeypatch.setenv("AZURE_TENANT_ID", app.tenant)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))

    def unfederate() -> None:  # the federated credential was deleted in Entra
        app.subject = "system:serviceaccount:regcred:someone-else"

    return Case(builtin_providers()["acr"], _registry(url="contoso.azurecr.cn", type="acr"), None, (token,),
                (3 * HOUR - 60, 3 * HOUR + 5), refuse=unfederate)


CASES = {
    "basic": _basic,
    "ecr-static-keys": _ecr(),
    "ecr-session-token": _ecr(material={**AWS_KEYS, "aws_session_token": SESSION_TOKEN.encode()}),
    "ecr-assume-role": _ecr(ecr={"roleArn": "arn:aws:iam::222222222222:role/puller", "externalId": "x-7"}),
    "ecr-public": _ecr("public.ecr.aws/acme"),
    "ecr-default-chain": _ecr_default_chain,
    "gcr-access-token": _gcr(None),
    "gcr-adc": _gcr_adc,
    "gcr-json-key": _gcr("jsonKey"),
    "acr-service-principal": _acr(),
    "acr-tenant-option": _acr(tenant_option=True),
    "acr-workload-identity": _acr_workload_identity,
}


@pytest.fixture(params=list(CASES))
def case(request, aws: AwsFake, google: GoogleTokenServer, monkeypatch, tmp_path, azure: Azure) -> Case:  # noqa: F811
    return CASES[request.param](aws, google, monkeypatch, tmp_path, azure)


def mint(case: Case, material: Mapping[str, bytes] | None | str = "default") -> Credential:
    return case.provider.mint(case.registry, case.material if material == "default" else material)


def assert_safe(case: Case, error: CredentialUnavailable) -> None:
    # A provider's own exception may not ride along into tracebacks either.
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    message = str(error)
    assert message.startswith(f"{case.registry.id}: ")
    for secret in case.secrets:
        assert secret not in message


def test_builtin_providers_cover_every_registry_type() -> None:
    assert set(builtin_providers()) == set(Registry.model_fields["type"].annotation.__args__)


def test_mints_a_usable_credential(case: Case) -> None:
    before = datetime.now(UTC)
    credential = mint(case)
    assert isinstance(credential.username, str) and credential.username
    assert isinstance(credential.password, str) and credential.password
    assert credential.password not in repr(credential)
    if case.lifetime is None:
        assert credential.expires_at is None
    else:
        assert credential.expires_at.tzinfo is not None and credential.expires_at.utcoffset().total_seconds() == 0
        low, high = case.lifetime
        assert low <= (credential.expires_at - before).total_seconds() <= high


def test_missing_secret(case: Case) -> None:
    if case.registry.secret_ref is None:
        pytest.skip("ambient credentials: there is no Secret to miss")
    with pytest.raises(CredentialUnavailable, match="not found$") as raised:
        mint(case, None)
    assert_safe(case, raised.value)


def test_secret_without_the_keys(case: Case) -> None:
    if case.registry.secret_ref is None:
        pytest.skip("ambient credentials: there is no Secret to miss")
    with pytest.raises(CredentialUnavailable, match="lacks key") as raised:
        mint(case, {"unrelated": b"value"})
    assert_safe(case, raised.value)


def test_garbled_material(case: Case) -> None:
    if not case.garbled:
        pytest.skip("ambient credentials: no material to garble")
    for garbled in case.garbled:
        with pytest.raises(CredentialUnavailable) as raised:
            mint(case, garbled)
        assert_safe(case, raised.value)


def test_refusal_by_the_cloud(case: Case) -> None:
    if case.refuse is None:
        pytest.skip("no cloud call to refuse")
    case.refuse()
    with pytest.raises(CredentialUnavailable) as raised:
        mint(case)
    assert_safe(case, raised.value)


def test_random_material_yields_a_credential_or_unavailable(case: Case) -> None:
    """Only Credential or CredentialUnavailable may come out, whatever the Secret holds."""
    if case.material is None:
        pytest.skip("ambient credentials: no material to garble")
    rng = random.Random(f"regcred-{case.registry.id}-{case.registry.type}")
    for _ in range(12):
        material = dict(case.material)
        victim = rng.choice(sorted(material))
        material[victim] = bytes(rng.choice((0, 10, 32, 58, 123, 255, rng.randrange(256)))
                                 for _ in range(rng.randrange(64)))
        try:
            mint(case, material)
        except CredentialUnavailable as error:
            assert_safe(case, error)
