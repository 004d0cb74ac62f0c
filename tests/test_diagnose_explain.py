"""``explain``'s rows and verdicts as a table of Pods: the verdict names the first thing that
would stop the pull."""

from __future__ import annotations

import pytest

from webhook.diagnose.explain import explain, render
from webhook.registries import parse_registries

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
REGISTRIES = parse_registries("""
registries:
  - {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}
  - {id: tenant, url: ghcr.io/tenant, type: basic, secretRef: t-creds, namespaces: ["team-*"]}
""")
OURS = {"app.kubernetes.io/managed-by": "regcred"}


def pod(*images: str, refs: tuple[str, ...] = (), waiting: str | None = None, namespace: str = "team-a") -> dict:
    status = {"containerStatuses": [{"name": "c0", "state": {"waiting": {"reason": waiting, "message": "m"}}}]} \
        if waiting else {}
    return {"metadata": {"name": "p", "namespace": namespace}, "status": status, "spec": {
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
        "imagePullSecrets": [{"name": ref} for ref in refs]}}


def secret(expires: str | None = None, labels: dict | None = None) -> dict:
    return {"metadata": {"labels": OURS if labels is None else labels,
                         "annotations": {"regcred.io/expires-at": expires} if expires else {}}}


@pytest.mark.parametrize(("manifest", "secrets", "verdict"), [
    pytest.param(pod("acme/app"), {"regcred-hub": secret()},
                 "the Pod does not reference regcred-hub: it was created before regcred knew registry hub",
                 id="created-while-webhook-down"),
    pytest.param(pod("ghcr.io/tenant/app", namespace="other"), {},
                 "the namespace other is not granted registry tenant", id="not-granted"),
    pytest.param(pod("acme/app", refs=("regcred-hub",)), {"regcred-hub": secret(labels={})},
                 "the Secret regcred-hub in team-a is not regcred's", id="foreign-secret"),
    pytest.param(pod("acme/app", refs=("regcred-hub",)), {}, "the Pod references regcred-hub but it does not exist",
                 id="secret-deleted"),
    pytest.param(pod("acme/app", refs=("regcred-hub",)), {"regcred-hub": secret("2020-01-01T00:00:00Z")},
                 "the Secret regcred-hub expired at 2020-01-01T00:00:00+00:00", id="stale"),
    pytest.param(pod("acme/app", refs=("regcred-hub",), waiting="ImagePullBackOff"),
                 {"regcred-hub": secret("2099-01-01T00:00:00Z")},
                 "the Secret is fresh and referenced: the registry refused these credentials; check the "
                 "credentials Secret hub-creds", id="registry-refused"),
    pytest.param(pod("quay.io/other/app", waiting="ErrImagePull"), {},
                 "container c0: quay.io/other/app matches no registry", id="unmatched"),
    pytest.param(pod("Bad Image"), {}, "container c0: the image is not a valid reference", id="invalid-image"),
    pytest.param(pod("acme/app", refs=("regcred-hub",)), {"regcred-hub": secret()},
                 "nothing regcred can see stands in the way", id="healthy"),
])
def test_verdicts(manifest, secrets, verdict):
    _, said = explain(manifest, REGISTRIES, {}, secrets, NOW)
    assert said.startswith(verdict), said


def test_no_registry_list():
    assert explain(pod("acme/app"), None, {}, {}, NOW) == (
        [], "regcred has no valid registry list: run `regcred check`")


def test_rows_show_each_container():
    rows, _ = explain(pod("acme/app", "busybox", refs=("regcred-hub",), waiting="ImagePullBackOff"),
                      REGISTRIES, {}, {"regcred-hub": secret("2099-01-01T00:00:00Z")}, NOW)
    table = render(rows)
    assert table[0].split() == ["CONTAINER", "IMAGE", "REGISTRY", "GRANTED", "SECRET", "REFERENCED", "WAITING"]
    assert table[1].split()[:7] == ["c0", "docker.io/acme/app", "hub", "yes", "fresh", "(expires",
                                    "2099-01-01T00:00:00+00:00)"]
    assert table[1].endswith("ImagePullBackOff: m")
    assert table[2].split() == ["c1", "docker.io/library/busybox", "-", "-", "-", "-", "-"]
