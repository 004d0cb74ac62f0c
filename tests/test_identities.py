"""Entries that share one identity but not one tenancy: ``regcred check-config`` warns.

A token carries the rights of the identity that minted it, so two entries minted from one
identity hand out equivalent tokens whatever their tenancy says.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from webhook.identities import shared_identity_warnings
from webhook.registries import parse_registries

ECR_A = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team-a"
ECR_B = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team-b"
TEAM_A = "namespaces: [team-a]"
TEAM_B = "namespaces: [team-b]"


def warnings(*entries: str) -> list[str]:
    text = "registries:\n" + "".join(f"  - {{id: r{index}, {entry}}}\n" for index, entry in enumerate(entries))
    return shared_identity_warnings(parse_registries(text).registries)


@pytest.mark.parametrize(("entries", "expected"), [
    pytest.param((f"url: {ECR_A}, type: ecr, {TEAM_A}", f"url: {ECR_B}, type: ecr, {TEAM_B}"),
                 ["registries[1] (r1) and registries[0] (r0) both use ecr regcred's own cloud identity"],
                 id="ecr-ambient-identity-two-tenancies"),
    pytest.param((f"url: {ECR_A}, type: ecr, {TEAM_A}", f"url: {ECR_B}, type: ecr"),
                 ["registries[1] (r1) and registries[0] (r0) both use ecr regcred's own cloud identity"],
                 id="ecr-one-restricted-one-open"),
    pytest.param((f"url: {ECR_A}, type: ecr, {TEAM_A}",
                  f"url: {ECR_B}, type: ecr, {TEAM_B}, ecr: {{roleArn: 'arn:aws:iam::123456789012:role/team-b'}}"),
                 [], id="ecr-own-role-per-tenancy"),
    pytest.param((f"url: {ECR_A}, type: ecr, secretRef: keys, {TEAM_A}",
                  f"url: {ECR_B}, type: ecr, secretRef: keys, namespaceSelector: {{matchLabels: {{team: b}}}}"),
                 ["registries[1] (r1) and registries[0] (r0) both use ecr credentials Secret 'keys'"],
                 id="ecr-one-secret-list-vs-selector"),
    pytest.param((f"url: {ECR_A}, type: ecr, {TEAM_A}", f"url: {ECR_B}, type: ecr, {TEAM_A}"), [],
                 id="same-tenancy-is-fine"),
    pytest.param(("url: gcr.io/acme, type: gcr, secretRef: gcp-key, namespaces: [a, b]",
                  "url: europe-docker.pkg.dev/acme/x, type: gcr, secretRef: gcp-key, namespaces: [b, a]"), [],
                 id="same-namespaces-in-another-order"),
    pytest.param((f"url: gcr.io/acme, type: gcr, {TEAM_A}", f"url: europe-docker.pkg.dev/acme/x, type: gcr, {TEAM_B}"),
                 ["registries[1] (r1) and registries[0] (r0) both use gcr regcred's own cloud identity"],
                 id="gcr-workload-identity-two-tenancies"),
    pytest.param((f"url: gcr.io/acme, type: gcr, secretRef: key-a, {TEAM_A}",
                  f"url: europe-docker.pkg.dev/acme/x, type: gcr, secretRef: key-b, {TEAM_B}"), [],
                 id="gcr-one-key-per-tenancy"),
    pytest.param((f"url: {ECR_A}, type: ecr, {TEAM_A}", f"url: gcr.io/acme, type: gcr, {TEAM_B}"), [],
                 id="different-clouds"),
    pytest.param((f"url: {ECR_A}, type: ecr, {TEAM_A}", f"url: public.ecr.aws/acme, type: ecr, {TEAM_B}"), [],
                 id="ecr-and-ecr-public-are-different-tokens"),
    pytest.param((f"url: {ECR_A}, type: ecr, {TEAM_A}", f"url: {ECR_B}, type: ecr, {TEAM_B}",
                  f"url: {ECR_A}/x, type: ecr, {TEAM_A}"),
                  ["registries[1] (r1) and registries[0] (r0)", "registries[2] (r2) and registries[1] (r1)"],
                 id="each-later-entry-warned-once"),
])
def test_shared_identities_with_different_tenancy_are_reported(entries, expected):
    found = warnings(*entries)
    assert len(found) == len(expected)
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start) and "tokens are equivalent" in line


def test_check_config_prints_the_warning_and_still_succeeds(tmp_path):
    path = tmp_path / "registries.yaml"
    path.write_text(f"registries:\n  - {{id: team-a, url: {ECR_A}, type: ecr, {TEAM_A}}}\n"
                    f"  - {{id: team-b, url: {ECR_B}, type: ecr, {TEAM_B}}}\n")
    ran = subprocess.run([sys.executable, "-m", "webhook", "check-config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.strip() == "OK (2 registries)"
    assert ran.stderr.startswith(f"{path}: warning: registries[1] (team-b) and registries[0] (team-a) both use ecr")
