"""deploy/ as a platform team takes it: the image's Dockerfile, the compose file and the
Kubernetes manifests, each read and checked here (no container runtime, no cluster)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.dockerfile import ROOT, copied_sources, read_dockerfile

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30.0"


def _settings_names() -> set[str]:
    return {f"LEDGER_{name.upper()}" for name in Settings.model_fields}


def _tag_is_pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and re.search(r"\d", tag) is not None


# -- Dockerfile ---------------------------------------------------------------------------------


def test_the_image_is_built_in_two_stages_on_a_pinned_base() -> None:
    dockerfile = read_dockerfile()
    assert len(dockerfile.stages) == 2
    build, final = dockerfile.stages
    assert build.name == "build"
    for stage in dockerfile.stages:
        assert _tag_is_pinned(dockerfile.image_of(stage)), dockerfile.image_of(stage)
    # The final stage takes the virtual environment and nothing else of the build.
    assert final.arguments("COPY") == ["--from=build /opt/connection-ledger /opt/connection-ledger"]
    assert not any(kw == "RUN" and "pip" in rest for kw, rest in final.instructions)


def test_the_build_stage_installs_with_the_script_the_wheel_test_runs() -> None:
    build = read_dockerfile().stage("build")
    runs = build.arguments("RUN")
    assert runs == ["sh deploy/install-venv.sh /src /opt/connection-ledger"]
    for source in copied_sources(build):
        assert (ROOT / source).exists(), f"deploy/Dockerfile copies {source}, which is not in the repository"
    assert "requirements-runtime.lock" in copied_sources(build)


def test_the_image_runs_serve_as_a_user_that_is_not_root() -> None:
    final = read_dockerfile().stages[-1]
    (user,) = final.arguments("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert shlex.split(final.arguments("CMD")[0].replace("[", "").replace("]", "").replace(",", " ")) == [
        "connledger",
        "serve",
    ]
    assert final.arguments("STOPSIGNAL") == ["SIGTERM"]


def test_the_image_exposes_the_port_it_listens_on_and_checks_healthz_there() -> None:
    final = read_dockerfile().stages[-1]
    environment = dict(re.findall(r"(\w+)=(\S+)", " ".join(final.arguments("ENV"))))
    assert environment["LEDGER_HTTP_HOST"] == "0.0.0.0"
    assert final.arguments("EXPOSE") == [environment["LEDGER_HTTP_PORT"]]
    assert {name for name in environment if name.startswith("LEDGER_")} <= _settings_names()
    (healthcheck,) = final.arguments("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "LEDGER_HTTP_PORT" in healthcheck


# -- compose.yaml -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def test_compose_has_a_three_node_nats_cluster_postgres_a_migration_and_two_instances(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {
        "nats-1",
        "nats-2",
        "nats-3",
        "postgres",
        "migrate",
        "roles",
        "ledger-1",
        "ledger-2",
    }
    for node in ("nats-1", "nats-2", "nats-3"):
        assert services[node]["environment"]["NATS_SERVER_NAME"] == node
        assert any(v.endswith(":/data") for v in services[node]["volumes"]), "JetStream's store on a volume"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert set(compose["volumes"]) == {"nats-1", "nats-2", "nats-3", "postgres"}


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert _tag_is_pinned(service["image"]), f"{name}: {service['image']}"


def test_compose_starts_in_order_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("nats-1", "nats-2", "nats-3", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["roles"]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    for name in ("ledger-1", "ledger-2"):
        depends = services[name]["depends_on"]
        assert depends["roles"] == {"condition": "service_completed_successfully"}
        for node in ("nats-1", "nats-2", "nats-3"):
            assert depends[node] == {"condition": "service_healthy"}


def test_compose_migrates_as_the_owner_and_serves_as_the_least_privileged_role(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["connledger", "migrate"]
    assert "//ledger_owner:" in services["migrate"]["environment"]["LEDGER_DATABASE_URL"]
    assert "--file=/deploy/postgres-roles.sql" in services["roles"]["command"]
    for name in ("ledger-1", "ledger-2"):
        environment = services[name]["environment"]
        assert set(environment) <= _settings_names()
        assert "//ledger_service:" in environment["LEDGER_DATABASE_URL"]
        assert environment["LEDGER_STREAM_REPLICAS"] == "3"
        assert len(environment["LEDGER_NATS_URL"].split(",")) == 3


def test_the_nats_cluster_config_syncs_every_write_and_routes_to_every_node() -> None:
    config = (DEPLOY / "nats" / "cluster.conf").read_text()
    assert re.search(r"sync_interval:\s*always", config)
    assert re.search(r"server_name:\s*\$NATS_SERVER_NAME", config)
    assert set(re.findall(r"nats-route://(nats-\d):6222", config)) == {"nats-1", "nats-2", "nats-3"}


# -- Kubernetes ---------------------------------------------------------------------------------


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / name).read_text()):
            found.append((KUBERNETES / name, document))
    return found


def _kind(kind: str) -> dict[str, Any]:
    (document,) = [d for _, d in _manifests() if d["kind"] == kind]
    return document


def test_every_manifest_file_is_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "nats-values.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize(
    ("path", "document"), _manifests(), ids=lambda v: v.name if isinstance(v, Path) else ""
)
def test_manifests_are_valid_against_the_kubernetes_schemas(path: Path, document: dict[str, Any]) -> None:
    if document["apiVersion"].startswith("monitoring.coreos.com/"):
        # The Prometheus Operator's resource: no schema in Kubernetes; checked below.
        return
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_deployment_is_probed_runs_unprivileged_and_drains_before_it_is_killed() -> None:
    pod = _kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    # What the service writes goes to volumes: the root filesystem is read-only.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts
    config = _kind("ConfigMap")["data"]
    assert config["LEDGER_VAR_DIR"] in mounts
    assert set(config) <= _settings_names()
    # preStop, then the drain (at most serve's 30 s), inside the grace period.
    from service.app.serve import DRAIN_SECONDS

    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop + DRAIN_SECONDS < pod["terminationGracePeriodSeconds"]
    assert container["ports"][0]["containerPort"] == int(config["LEDGER_HTTP_PORT"])


def test_the_migration_job_runs_as_the_owner_and_the_instances_as_the_service_role() -> None:
    job = _kind("Job")["spec"]["template"]["spec"]["containers"][0]
    deployment = _kind("Deployment")["spec"]["template"]["spec"]["containers"][0]

    def secret_key(container: dict[str, Any]) -> str:
        (url,) = [e for e in container["env"] if e["name"] == "LEDGER_DATABASE_URL"]
        key: str = url["valueFrom"]["secretKeyRef"]["key"]
        return key

    assert job["command"] == ["connledger", "migrate"]
    assert secret_key(job) == "owner-database-url"
    assert secret_key(deployment) == "service-database-url"


def test_the_budget_service_and_monitor_select_the_instances() -> None:
    labels = _kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "ServiceMonitor"):
        selector = _kind(kind)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), kind
    service = _kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    monitor = _kind("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert _kind("PodDisruptionBudget")["spec"]["minAvailable"] < _kind("Deployment")["spec"]["replicas"]


def test_the_nats_chart_values_make_a_three_node_jetstream_cluster_on_file_storage() -> None:
    values = yaml.safe_load((KUBERNETES / "nats-values.yaml").read_text())["config"]
    assert values["cluster"] == {"enabled": True, "replicas": 3}
    jetstream = values["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert jetstream["merge"]["sync_interval"] == "always"
    config = _kind("ConfigMap")["data"]
    assert config["LEDGER_STREAM_REPLICAS"] == str(values["cluster"]["replicas"])


def test_every_path_the_deploy_files_probe_is_a_route_of_the_app() -> None:
    from service.http.openapi import openapi_document

    routes = set(openapi_document()["paths"])
    container = _kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    probed = {
        container[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")
    }
    probed |= {endpoint["path"] for endpoint in _kind("ServiceMonitor")["spec"]["endpoints"]}
    probed |= set(re.findall(r"/[a-z]+z\b", read_dockerfile().stages[-1].arguments("HEALTHCHECK")[0]))
    assert probed == {"/readyz", "/healthz", "/metrics"}
    assert probed <= routes, probed - routes
