"""The chart's workload and its Services: the Deployment (flags, hardening, probes, spread),
the webhook, metrics and CI Services, the optional monitoring objects, and NOTES.txt."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from tests.support.helmchart import CHART, NAMESPACE, helm, render
from webhook import composition, listeners
from webhook.registries import parse_registries
from webhook.yamlload import ConfigError

# ---- the Deployment -----------------------------------------------------------------------


def test_deployment_args_are_the_server_flags():
    assert render().args == [
        "--registries-configmap=regcred-registries",
        "--tls-cert=/etc/regcred/tls/tls.crt",
        "--tls-key=/etc/regcred/tls/tls.key",
        # Managed (the default): the certificate must cover the names regcred issues it for.
        "--tls-names=" + ",".join(f"{service}.regcred-system{suffix}" for service in ("regcred", "regcred-ci")
                                  for suffix in ("", ".svc", ".svc.cluster.local")),
        "--port=10250",
        "--metrics-port=9090",
        "--log-level=info",
        "--kube-qps=20",
        "--kube-burst=40",
        "--leader-elect",
        "--prune",
        "--refresh-interval=60",
        "--exclude-namespaces=kube-system,kube-public,kube-node-lease",
        "--webhook-cert-secret=regcred-webhook-cert",
        "--webhook-configuration=regcred",
        "--webhook-cert-sans=" + ",".join(f"{service}.regcred-system{suffix}" for service in ("regcred", "regcred-ci")
                                          for suffix in ("", ".svc", ".svc.cluster.local")),
        f"--webhook-cert-validity={365 * 86400}",
        f"--webhook-ca-validity={1825 * 86400}",
    ]


def test_deployment_args_follow_values():
    args = render({
        "ci": {"enabled": True, "tokensSecret": "ci-users", "trustedProxies": ["10.8.0.0/16", "fd00::/64"]},
        "leaderElection": {"enabled": False}, "replicaCount": 1,
        "refresher": {"prune": False, "intervalSeconds": 30}, "logLevel": "debug",
        "kubeClient": {"qps": 50, "burst": 100}, "extraArgs": ["--admission-budget=2"],
        "webhook": {"port": 10260}, "metrics": {"port": 8080},
    }).args
    for expected in ("--ci-port=8443", "--ci-tokens-secret=ci-users", "--ci-trusted-proxies=10.8.0.0/16,fd00::/64",
                     "--no-leader-elect", "--no-prune",
                     "--refresh-interval=30", "--log-level=debug", "--kube-qps=50", "--kube-burst=100",
                     "--port=10260", "--metrics-port=8080"):
        assert expected in args
    assert args[-1] == "--admission-budget=2"
    default_ci = render({"ci": {"enabled": True}}).args
    assert "--ci-tokens-secret=regcred-ci-tokens" in default_ci
    assert not any(arg.startswith("--ci-trusted-proxies") for arg in default_ci)


def test_deployment_args_parse_with_the_server_command_line():
    from webhook.__main__ import build_parser

    everything = render({"ci": {"enabled": True}, "leaderElection": {"enabled": False}, "replicaCount": 1,
                         "refresher": {"prune": False}})
    for rendered in (render(), everything):
        args = build_parser().parse_args(["serve", *rendered.args])
        assert args.command == "serve"


def test_pods_are_hardened():
    rendered = render()
    pod = rendered.deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert rendered.container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }
    assert "hostNetwork" not in pod


def test_probes_hit_healthz_and_readyz_over_https_on_the_admission_port():
    rendered = render({"webhook": {"port": 10260}})
    container = rendered.container
    (https,) = [p for p in container["ports"] if p["name"] == "https"]
    assert https["containerPort"] == 10260
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}


def test_pod_namespace_comes_from_the_downward_api():
    env = render({"extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}]}).container["env"]
    assert env[0] == {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    assert env[1] == {"name": "AWS_REGION", "value": "eu-west-1"}


def test_a_registry_list_change_rolls_the_pods_and_nothing_else_does():
    def checksum(values):
        return render(values).deployment["spec"]["template"]["metadata"]["annotations"]["checksum/registries"]

    registries = [{"id": "harbor", "url": "harbor.example.com/platform", "type": "basic", "secretRef": "harbor"}]
    assert checksum({}) == checksum({"replicaCount": 3})
    assert checksum({}) != checksum({"registries": registries})
    rendered = render({"registries": registries})
    template = rendered.sources["regcred/templates/configmap.yaml"]
    assert checksum({"registries": registries}) == hashlib.sha256(template.encode()).hexdigest()


def test_replicas_spread_across_nodes_and_survive_drains():
    rendered = render()
    spec = rendered.deployment["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    (spread,) = spec["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    pdb = rendered.get("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()


def test_scheduling_values_reach_the_pod():
    pod = render({
        "nodeSelector": {"pool": "system"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {}}, "priorityClassName": "system-cluster-critical",
        "resources": {"requests": {"cpu": "1"}}, "podAnnotations": {"a": "b"}, "podLabels": {"team": "platform"},
        "imagePullSecrets": [{"name": "ghcr"}], "image": {"digest": "sha256:" + "a" * 64},
    }).deployment["spec"]["template"]
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "system"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["imagePullSecrets"] == [{"name": "ghcr"}]
    # Helm merges maps with the defaults.
    assert spec["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "128Mi"},
                                                  "limits": {"memory": "512Mi"}}
    assert spec["containers"][0]["image"] == "ghcr.io/regcred/regcred@sha256:" + "a" * 64
    assert pod["metadata"]["annotations"]["a"] == "b"
    assert pod["metadata"]["labels"]["team"] == "platform"


def test_image_tag_defaults_to_the_app_version():
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert render().container["image"] == f"ghcr.io/regcred/regcred:{app_version}"
    assert render({"image": {"tag": "0.2.0"}}).container["image"] == "ghcr.io/regcred/regcred:0.2.0"


def test_host_network():
    rendered = render({"hostNetwork": True, "webhook": {"port": 10260}})
    pod = rendered.deployment["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "--port=10260" in rendered.args
    # The kubelet owns 10250 on every node.
    with pytest.raises(helm.HelmRenderError, match="webhook.port other than 10250"):
        render({"hostNetwork": True})


# ---- Services, CI API, observability ------------------------------------------------------


def _port_names(rendered) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in rendered.container["ports"]}


def _selects_pods(rendered, service: dict) -> bool:
    return service["spec"]["selector"].items() <= rendered.deployment["spec"]["template"]["metadata"]["labels"].items()


def test_webhook_service_reaches_the_admission_port():
    rendered = render({"webhook": {"servicePort": 8443}})
    service = rendered.get("Service", "regcred")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8443 == rendered.webhook["clientConfig"]["service"]["port"]
    assert _port_names(rendered)[port["targetPort"]] == 10250
    assert _selects_pods(rendered, service)


def test_metrics_service():
    rendered = render()
    service = rendered.get("Service", "regcred-metrics")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9090
    assert _port_names(rendered)[port["targetPort"]] == 9090
    assert _selects_pods(rendered, service)


def test_ci_api_is_off_by_default():
    rendered = render()
    assert rendered.find("Service", "regcred-ci") is None
    assert rendered.find("Ingress") is None
    assert not any(arg.startswith("--ci-") for arg in rendered.args)
    assert "https-ci" not in _port_names(rendered)


def test_ci_api_when_enabled():
    rendered = render({"ci": {"enabled": True, "ingress": {"enabled": True, "hosts": ["ci.example.com"]}}})
    service = rendered.get("Service", "regcred-ci")
    (port,) = service["spec"]["ports"]
    assert _port_names(rendered)[port["targetPort"]] == 8443
    assert _selects_pods(rendered, service)
    (rule,) = rendered.get("Ingress")["spec"]["rules"]
    assert rule["host"] == "ci.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/registries", "Prefix")
    assert path["backend"]["service"] == {"name": "regcred-ci", "port": {"name": "https-ci"}}


@pytest.mark.parametrize(("values", "message"), [
    pytest.param({"ci": {"ingress": {"enabled": True, "hosts": ["x"]}}}, "needs ci.enabled", id="ingress-without-ci"),
    pytest.param({"ci": {"enabled": True, "ingress": {"enabled": True}}}, "at least one host",
                 id="ingress-without-hosts"),
    pytest.param({"ci": {"enabled": True, "port": 9090}}, "must differ", id="ci-port-clash"),
    pytest.param({"shutdownDelaySeconds": 10}, "terminationGracePeriodSeconds must be", id="grace-too-short"),
    pytest.param({"replicaCount": 2, "leaderElection": {"enabled": False}}, "needs leaderElection",
                 id="replicas-without-lease"),
])
def test_inconsistent_values_fail_with_a_reason(values, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def test_a_url_with_a_scheme_fails_with_check_configs_message():
    entries = [{"id": "hub", "url": "docker.io/acme", "type": "basic", "secretRef": "hub"},
               {"id": "harbor", "url": "https://harbor.example.com", "type": "basic", "secretRef": "harbor"}]
    with pytest.raises(ConfigError) as checked:
        parse_registries(yaml.safe_dump({"registries": entries}))
    [message] = checked.value.errors
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render({"registries": entries})


@pytest.mark.parametrize(("values", "delay"), [
    pytest.param({}, 5, id="default"),
    pytest.param({"shutdownDelaySeconds": 10, "terminationGracePeriodSeconds": 40}, 10, id="longer"),
    pytest.param({"shutdownDelaySeconds": 0}, 0, id="off"),
])
def test_termination_leaves_time_for_the_preStop_delay_and_regcreds_drain(values, delay):
    rendered = render(values)
    hook = rendered.container.get("lifecycle", {}).get("preStop")
    assert hook == ({"exec": {"command": ["sleep", str(delay)]}} if delay else None)
    grace = rendered.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # What serve() may take after SIGTERM: uvicorn's drain, then stopping the cluster side.
    assert grace >= delay + listeners.GRACEFUL_SECONDS + composition.STOP_SECONDS


def test_service_monitor_is_off_by_default():
    rendered = render()
    assert rendered.find("ServiceMonitor") is None
    assert rendered.find("PrometheusRule") is None
    assert [c for c in rendered.all("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")] == []


def test_service_monitor_scrapes_the_metrics_service_only():
    rendered = render({"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "interval": "30s"}})
    monitor = rendered.get("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s["metadata"]["name"] for s in rendered.all("Service")
                if selector.items() <= s["metadata"]["labels"].items()]
    assert selected == ["regcred-metrics"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = rendered.get("Service", "regcred-metrics")["spec"]["ports"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (port["name"], "/metrics", "30s")


def test_grafana_dashboard_configmap():
    rendered = render({"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Platform"}}})
    configmap = rendered.get("ConfigMap", "regcred-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Platform"}
    dashboard = json.loads(configmap["data"]["regcred.json"])
    assert dashboard["uid"] == "regcred"


def test_notes_say_how_to_check_and_how_to_opt_out():
    notes = render().notes
    assert "--dry-run=server" in notes
    assert "kubectl label namespace <name> regcred.io/inject=disabled" in notes
    assert re.search(r"Never mutated: kube-system, kube-public, kube-node-lease and regcred-system", notes)
    assert "WARNING: replicaCount is 1" in render({"replicaCount": 1}).notes


def test_notes_warn_when_the_image_is_the_unpublished_default():
    assert "WARNING: image.repository is the chart's default" in render().notes
    own = render({"image": {"repository": "registry.example.com/platform/regcred", "tag": "0.1.0"}}).notes
    assert "WARNING" not in own
