"""When an admission-time ensure keeps an existing managed Secret, and when only the refresher
may replace it (``writepolicy.may_keep`` and ``SecretWriter.ensure(authoritative=...)``).

Every replica mints its own token, so the Secret an admission finds usually differs from the
one it would write. Keeping any fresh one for the same url is what stops two replicas from
rewriting each other's Secrets; the refresher on the leader alone replaces what differs, so a
rotation is never lost to a rival's token minted from the old credentials.

What the store does with each kind of existing Secret, for each kind of caller, is tabled
against the fake API server in test_kube_secretstore (``EXISTING``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import auths, kube_client
from webhook.kube.secretstore import KubeSecretStore
from webhook.providers import Credential
from webhook.pullsecrets import EXPIRES_ANNOTATION, build_pull_secret
from webhook.registries import parse_registries
from webhook.secretwriter import SecretWriter
from webhook.writepolicy import FRESH_MARGIN, may_keep

HUB, OTHER = parse_registries(
    "registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: x}\n"
    "- {id: other, url: docker.io/other, type: basic, secretRef: y}\n").registries
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0


def secret(password: str = "theirs", life: float | None = HOUR, registry=HUB) -> dict:
    """A pull Secret whose credential expires ``life`` seconds after NOW (None: never)."""
    expires = None if life is None else datetime.fromtimestamp(NOW + life, UTC)
    return build_pull_secret(registry, Credential("robot", password, expires), "default")


def edited(base: dict, *, url: str | None = None, registry_label: str | None = None, type_: str | None = None,
           expiry: str | None = None, data: str | None = None) -> dict:
    """``base`` as someone (a user, an older regcred, another registry list) changed it."""
    copy = {**base, "metadata": {**base["metadata"], "labels": dict(base["metadata"]["labels"]),
                                 "annotations": dict(base["metadata"].get("annotations") or {})}}
    if url is not None:
        copy["data"] = secret(registry=OTHER)["data"]
    if registry_label is not None:
        copy["metadata"]["labels"]["regcred.io/registry"] = registry_label
    if type_ is not None:
        copy["type"] = type_
    if expiry is not None:
        copy["metadata"]["annotations"][EXPIRES_ANNOTATION] = expiry
    if data is not None:
        copy["data"] = {".dockerconfigjson": data}
    return copy


KEEP_RULES = [
    # (existing, desired, kept)
    pytest.param(secret(life=HOUR - 5), secret("ours"), True, id="fresh-rival-token-kept"),
    pytest.param(secret(life=HOUR), secret("ours"), True, id="rival-expiring-in-the-same-second-kept"),
    pytest.param(secret(life=12 * HOUR), secret("ours"), True, id="rival-expiring-later-kept"),
    pytest.param(secret(life=HOUR / 3), secret("ours"), True, id="leader-token-at-two-thirds-of-its-life-kept"),
    pytest.param(secret(life=FRESH_MARGIN), secret("ours", 12 * HOUR), True, id="just-fresh-enough-kept"),
    pytest.param(secret(life=FRESH_MARGIN - 1), secret("ours", 12 * HOUR), False, id="close-to-expiry-replaced"),
    pytest.param(secret(life=-1), secret("ours"), False, id="expired-replaced"),
    # Short tokens: a quarter of our own life left is enough (a fixed margin would exceed
    # the third a leader keeps, and the follower would fight it on every re-mint).
    pytest.param(secret(life=31), secret("ours", 120), True, id="short-token-quarter-of-ours-left-kept"),
    pytest.param(secret(life=29), secret("ours", 120), False, id="short-token-less-than-a-quarter-replaced"),
    # Ours came back expired (clock skew, a fake cloud): never swapped for one expiring sooner.
    pytest.param(secret(life=-5), secret("ours", -10), True, id="ours-expired-theirs-later-kept"),
    pytest.param(secret(life=-20), secret("ours", -10), False, id="ours-expired-theirs-earlier-replaced"),
    pytest.param(secret(life=None), secret("ours"), True, id="theirs-never-expires-kept"),
    pytest.param(secret(life=HOUR), secret("ours", None), True, id="ours-never-expires-theirs-fresh-kept"),
    pytest.param(secret(life=60), secret("ours", None), False, id="ours-never-expires-theirs-close-replaced"),
    pytest.param(edited(secret(), url="docker.io/other"), secret("ours"), False, id="wrong-url-replaced"),
    pytest.param(edited(secret(), registry_label="other"), secret("ours"), False, id="other-registry-label-replaced"),
    pytest.param(edited(secret(), type_="Opaque"), secret("ours"), False, id="wrong-type-replaced"),
    pytest.param(edited(secret(), data="not base64 json"), secret("ours"), False, id="unreadable-data-replaced"),
    pytest.param(edited(secret(), expiry="next tuesday"), secret("ours"), False, id="unreadable-expiry-replaced"),
]


@pytest.mark.parametrize(("existing", "wanted", "kept"), KEEP_RULES)
def test_an_admission_keeps_a_fresh_managed_secret_for_the_same_url(existing, wanted, kept):
    assert may_keep(existing, wanted, NOW) is kept


def test_the_refresher_does_not_share_an_admissions_keeping_answer():
    """Same Secret, same contents, at the same moment: the admission's write keeps the rival's
    Secret, so the refresher must not take its "unchanged" for its own; it writes after it."""
    with FakeApiServer() as server:
        server.put_object("secrets", secret("rival", 12 * HOUR), "default")

        async def main():
            client = kube_client(server)
            store = SecretWriter(KubeSecretStore(client), wall_clock=lambda: NOW)
            try:
                wanted = secret("ours")
                outcomes = await asyncio.gather(store.ensure(wanted), store.ensure(wanted, authoritative=True))
                return [o.outcome for o in outcomes]
            finally:
                client.close()

        assert asyncio.run(main()) == ["unchanged", "updated"]
        stored = server.get_object("secrets", "default", secret()["metadata"]["name"])
    assert next(iter(auths(stored).values()))["password"] == "ours"
