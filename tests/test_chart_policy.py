"""The chart's ValidatingAdmissionPolicy on regcred's own Secret writes, as rendered.

What the API server does with it is proven on a real one (tests/e2e/test_write_policy.py);
here: it is on by default, judges exactly regcred's ServiceAccount, is bound with Deny, and
turning it off removes both objects and says why that is dangerous.
"""

from __future__ import annotations

import pytest

from tests.support.helmchart import NAMESPACE, render

POLICY, BINDING = "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"


@pytest.mark.parametrize(("values", "user"), [
    pytest.param({}, f"system:serviceaccount:{NAMESPACE}:regcred", id="defaults"),
    pytest.param({"serviceAccount": {"name": "puller"}}, f"system:serviceaccount:{NAMESPACE}:puller",
                 id="named-service-account"),
])
def test_the_policy_judges_regcreds_service_account_and_is_bound_to_deny(values, user):
    rendered = render(values)
    policy, binding = rendered.get(POLICY), rendered.get(BINDING)
    # The account, and (tls.mode managed, the default) not regcred's own certificate Secret.
    account, not_the_certificate = policy["spec"]["matchConditions"]
    assert user in account["expression"]
    expression = not_the_certificate["expression"]
    assert "regcred-webhook-cert" in expression and NAMESPACE in expression
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["resources"], sorted(rule["operations"])) == (["secrets"], ["CREATE", "DELETE", "UPDATE"])
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert "secretWritePolicy.enabled is false" not in rendered.notes


def test_other_tls_modes_exempt_no_secret():
    (account,) = render({"tls": {"mode": "selfSigned"}}).get(POLICY)["spec"]["matchConditions"]
    assert account["name"] == "regcred-service-account"


def test_turning_it_off_removes_both_objects_and_warns():
    rendered = render({"secretWritePolicy": {"enabled": False}})
    assert rendered.find(POLICY) is None and rendered.find(BINDING) is None
    assert "WARNING: secretWritePolicy.enabled is false" in rendered.notes
    assert "1.30" in rendered.notes


def test_a_release_named_otherwise_names_its_own_policy():
    rendered = render({}, name="edge")
    assert rendered.get(POLICY)["metadata"]["name"] == "edge-regcred-secret-writes"
    assert rendered.get(BINDING)["spec"]["policyName"] == "edge-regcred-secret-writes"


def test_the_network_policy_is_off_by_default():
    assert render().find("NetworkPolicy") is None


@pytest.mark.parametrize(("ci", "open_ports"), [
    pytest.param(False, ["http-metrics"], id="metrics-open"),
    pytest.param(True, ["http-metrics", "https-ci"], id="ci-open-too"),
])
def test_the_network_policy_lets_only_the_api_server_reach_the_admission_port(ci, open_ports):
    values = {"networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.0/16", "172.16.0.2/32"]},
              "ci": {"enabled": ci}}
    rendered = render(values)
    policy = rendered.get("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == rendered.deployment["spec"]["selector"]["matchLabels"]
    admission, others = policy["spec"]["ingress"]
    assert admission == {"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}, {"ipBlock": {"cidr": "172.16.0.2/32"}}],
                         "ports": [{"port": "https", "protocol": "TCP"}]}
    assert "from" not in others and [port["port"] for port in others["ports"]] == open_ports


def test_the_network_policy_without_cidrs_is_refused_with_a_reason():
    with pytest.raises(Exception, match="apiServerCIDRs"):
        render({"networkPolicy": {"enabled": True}})
