"""The chart's alerts and dashboard against Prometheus' own tooling.

The PrometheusRule is rendered by Helm; its ``spec`` is a Prometheus rule file as is, so
``promtool check rules`` checks it and ``promtool test rules`` runs one unit test file per
alert (tests/fixtures/alerts/<AlertName>.yaml, firing and quiet cases). Every metric the alerts
and the dashboard query must be one regcred exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import FIXTURES, require_tools
from tests.support.helmchart import CHART, render
from webhook.metrics import Metrics

ALERT_TESTS = FIXTURES / "alerts"


def _rules() -> dict:
    rendered = render({"prometheusRule": {"enabled": True}})
    return rendered.get("PrometheusRule")["spec"]


def _alerts() -> list[dict]:
    return [rule for group in _rules()["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory) -> Path:
    """The rendered rules as rules.yaml, beside a copy of every alert test file."""
    directory = tmp_path_factory.mktemp("alerts")
    (directory / "rules.yaml").write_text(yaml.safe_dump(_rules(), sort_keys=False, width=1000))
    for test_file in ALERT_TESTS.glob("*.yaml"):
        shutil.copy(test_file, directory / test_file.name)
    return directory


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    require_tools("promtool")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.system
def test_promtool_check_rules(rules_dir):
    result = _promtool("check", "rules", "rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_every_alert_has_a_unit_test_and_every_test_an_alert():
    assert sorted(a["alert"] for a in _alerts()) == sorted(p.stem for p in ALERT_TESTS.glob("*.yaml"))


@pytest.mark.system
@pytest.mark.parametrize("alert", sorted(p.stem for p in ALERT_TESTS.glob("*.yaml")))
def test_alert_unit_tests(alert, rules_dir):
    test_file = yaml.safe_load((ALERT_TESTS / f"{alert}.yaml").read_text())
    checks = [check for test in test_file["tests"] for check in test["alert_rule_test"]]
    assert {check["alertname"] for check in checks} == {alert}
    assert any(check["exp_alerts"] for check in checks), "no case where the alert fires"
    assert any(not check["exp_alerts"] for check in checks), "no case where it stays quiet"
    result = _promtool("test", "rules", f"{alert}.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_thresholds_and_labels_follow_values():
    rendered = render({"prometheusRule": {"enabled": True, "admissionLatencySeconds": 2.5,
                                          "admissionErrorRatio": 0.05, "alertLabels": {"team": "platform"}},
                       "refresher": {"intervalSeconds": 600}})
    alerts = {rule["alert"]: rule for group in rendered.get("PrometheusRule")["spec"]["groups"]
              for rule in group["rules"]}
    assert re.search(r"> 2\.5\s*$", alerts["RegcredAdmissionSlow"]["expr"])
    assert re.search(r"> 0\.05\s*$", alerts["RegcredAdmissionErrors"]["expr"])
    # Three refresh intervals, at least 15 minutes.
    assert re.search(r"> 1800\s*$", alerts["RegcredPullSecretRefreshFailing"]["expr"])
    assert all(rule["labels"]["team"] == "platform" for rule in alerts.values())


def _dashboard() -> dict:
    return json.loads((CHART / "dashboards" / "regcred.json").read_text())


def _dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in _dashboard()["panels"] for target in panel.get("targets", [])]


@pytest.mark.system
def test_dashboard_queries_are_valid_promql(tmp_path):
    # Grafana's variables are not PromQL; put in what Grafana would.
    exprs = [e.replace("$__rate_interval", "5m").replace("$namespace", ".*") for e in _dashboard_exprs()]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"regcred:dashboard_query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(rules, width=1000))
    result = _promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_have_unique_ids_and_a_namespace_filter():
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for expr in _dashboard_exprs():
        assert 'namespace=~"$namespace"' in expr, expr


def _exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}[family.type]
        names |= {family.name + suffix for suffix in suffixes}
    return names


def _metric_names(expr: str) -> set[str]:
    """Every regcred metric an expression reads (label names never start with regcred_)."""
    return set(re.findall(r"\bregcred_[a-z0-9_]+", re.sub(r'"[^"]*"', '""', expr)))


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_queried_metric_is_exported(source):
    exprs = [a["expr"] for a in _alerts()] if source == "alerts" else _dashboard_exprs()
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used, "no metric found: the name pattern is broken"
    assert used <= _exported_names(), f"not exported by webhook/metrics.py: {sorted(used - _exported_names())}"
