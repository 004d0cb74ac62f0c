"""The managed webhook certificate's decisions (webhook/certauthority.py), on a fake clock."""

from __future__ import annotations

import datetime as dt

import pytest

from webhook.certauthority import Material, Policy, parse_bundle, plan, sans, verifies

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
POLICY = Policy(("regcred.regcred-system.svc", "127.0.0.1"), cert_validity=90 * DAY, ca_validity=360 * DAY)


@pytest.fixture(scope="module")
def first() -> Material:
    return plan(None, POLICY, now=T0, ca_trusted=False)


def test_the_first_plan_makes_a_ca_and_a_certificate_it_verifies(first):
    assert parse_bundle(first.bundle) == [first.ca]
    assert verifies(first.serving, [first.ca], T0)
    assert sans(first.serving) == {"regcred.regcred-system.svc", "127.0.0.1"}
    assert Material.from_data(first.as_data()) == first


@pytest.mark.parametrize(("age", "renewed"), [
    pytest.param(DAY, False, id="young"),
    pytest.param(59 * DAY, False, id="before-2/3"),
    pytest.param(61 * DAY, True, id="after-2/3"),
])
def test_the_serving_certificate_renews_at_two_thirds_with_the_same_ca(first, age, renewed):
    after = plan(first, POLICY, now=T0 + age, ca_trusted=True)
    assert (after.tls_cert != first.tls_cert) is renewed
    assert (after.ca_cert, after.bundle) == (first.ca_cert, first.bundle)  # the caBundle does not change


def test_a_ca_rotation_trusts_both_then_signs_with_the_new_once_trusted(first):
    now = T0 + 241 * DAY  # past 2/3 of the CA's 360 days
    step = plan(first, POLICY, now=now, ca_trusted=False)
    assert step.ca_cert != first.ca_cert and parse_bundle(step.bundle) == [first.ca, step.ca]
    assert verifies(step.serving, parse_bundle(step.bundle), now)
    untrusted = plan(step, POLICY, now=now, ca_trusted=False)
    assert untrusted == step  # not signed by the new CA before the API server trusts it
    trusted = plan(step, POLICY, now=now, ca_trusted=True)
    assert verifies(trusted.serving, [step.ca], now) and not verifies(trusted.serving, [first.ca], now)
    later = plan(trusted, POLICY, now=T0 + 361 * DAY, ca_trusted=True)  # the old CA expired
    assert parse_bundle(later.bundle) == [step.ca]


def test_a_lowered_validity_renews_now(first):
    shorter = Policy(POLICY.names, cert_validity=10 * DAY, ca_validity=POLICY.ca_validity)
    assert plan(first, shorter, now=T0 + DAY, ca_trusted=True).tls_cert != first.tls_cert
    sooner = Policy(POLICY.names, cert_validity=POLICY.cert_validity, ca_validity=100 * DAY)
    rotated = plan(first, sooner, now=T0 + DAY, ca_trusted=False)
    assert rotated.ca_cert != first.ca_cert and parse_bundle(rotated.bundle) == [first.ca, rotated.ca]


def test_changed_names_reissue_and_garbage_starts_over(first):
    wider = Policy((*POLICY.names, "localhost"), POLICY.cert_validity, POLICY.ca_validity)
    assert "localhost" in sans(plan(first, wider, now=T0 + DAY, ca_trusted=True).serving)
    assert Material.from_data({**first.as_data(), "tls.key": b"not a key"}) is None
    assert Material.from_data({}) is None
