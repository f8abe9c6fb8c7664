"""The deployment artefacts agree with the CLI and the HTTP surface, so a renamed command breaks a test.

Dockerfile, docker-compose.yml and the Kubernetes manifests are parsed (no engine, no cluster); commands
are checked against the real ``services.cli.build_parser()``. ``docker-compose config`` and
``kubectl kustomize`` run too when those binaries are installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.config import load_config

from .manifests import (
    COMPOSE_FILE,
    CONSUMERS,
    DEPLOY,
    HTTP_PORT,
    K8S,
    ROOT,
    as_list,
    cli_error,
    compose_env,
    compose_services,
    container_port,
    containers,
    default_of,
    docker_args,
    docker_env,
    docker_stages,
    env_configmap,
    exec_form,
    k8s,
    k8s_docs,
    kustomization,
    pod_spec,
    port_published,
    port_target,
    pyproject,
    secret_env_names,
    secrets_example,
    serve_choices,
)

RECEIVER_IN_IMAGE = "/opt/handoff/demo/demo_receiver.py"


def handoff_image() -> str:
    """The image every service runs: the one the migrate service (built from deploy/Dockerfile) uses."""
    migrate = compose_services()["migrate"]
    assert migrate["build"]["dockerfile"] == "deploy/Dockerfile"
    image = migrate["image"]
    assert isinstance(image, str)
    return image


def handoff_services() -> dict[str, dict[str, Any]]:
    """Compose services running the handoff CLI (the image's ENTRYPOINT, not overridden)."""
    return {
        name: service
        for name, service in compose_services().items()
        if service.get("image") == handoff_image() and "entrypoint" not in service
    }


def served(service: dict[str, Any]) -> str | None:
    command = as_list(service.get("command"))
    return command[1] if command[:1] == ["serve"] and len(command) == 2 else None


def k8s_argv(container: dict[str, Any]) -> list[str]:
    return as_list(container.get("command")) + as_list(container.get("args"))


# --- Dockerfile --------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    stages = docker_stages()
    assert len(stages) >= 2, "builder + runtime stages expected"
    assert stages[-1] == "python:3.11-slim"
    assert any(rest.startswith("--from=") for rest in docker_args("COPY")), "runtime must copy from the builder"


def test_dockerfile_runs_as_non_root() -> None:
    (*_, user) = docker_args("USER")
    assert user.split(":")[0] not in ("root", "0", "")


def test_dockerfile_entrypoint_and_default_command_are_cli_commands() -> None:
    assert exec_form("ENTRYPOINT") == ["handoff"]
    assert pyproject()["project"]["scripts"]["handoff"], "the image's ENTRYPOINT is the `handoff` script"
    cmd = exec_form("CMD")
    assert cmd == ["serve", "api"]
    assert cli_error(cmd) is None, cli_error(cmd)


def test_dockerfile_listens_on_all_interfaces_on_8080() -> None:
    assert [int(p.split("/")[0]) for p in docker_args("EXPOSE")] == [HTTP_PORT]
    env = docker_env()
    assert env["HANDOFF_HTTP_HOST"] == "0.0.0.0"
    assert int(env.get("HANDOFF_HTTP_PORT", HTTP_PORT)) == HTTP_PORT


def test_dockerfile_healthcheck_asks_healthz_with_python() -> None:
    (check,) = docker_args("HEALTHCHECK")
    _, _, command = check.partition("CMD ")
    argv = yaml.safe_load(command)  # exec form: a JSON list
    assert argv[0] == "python", "python:3.11-slim has no curl"
    assert "/healthz" in " ".join(argv)
    assert "HANDOFF_HTTP_PORT" in " ".join(argv) or str(HTTP_PORT) in " ".join(argv)


def test_dockerfile_copies_every_package_of_the_project() -> None:
    includes = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in includes}
    copied = {rest.split()[0].rstrip("/") for rest in docker_args("COPY") if not rest.startswith("--")}
    missing = packages - copied
    assert not missing, f"deploy/Dockerfile does not COPY {sorted(missing)} into the build"
    allowed = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert not packages - {line.lstrip("!") for line in allowed if line.startswith("!")}


def test_demo_receiver_is_copied_where_compose_runs_it() -> None:
    copies = [rest.split() for rest in docker_args("COPY")]
    assert ["deploy/demo_receiver.py", RECEIVER_IN_IMAGE] in copies
    for name in ("crm-receiver", "alert-receiver"):
        service = compose_services()[name]
        assert service["image"] == handoff_image()
        assert as_list(service["entrypoint"]) == ["python", RECEIVER_IN_IMAGE]


# --- compose -----------------------------------------------------------------------------------------


def test_compose_has_kafka_kraft_postgres_and_migrate() -> None:
    services = compose_services()
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"] == "postgres:16"
    kafka_env = compose_env(services["kafka"])
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in str(services).lower()
    assert as_list(services["migrate"]["command"]) == ["migrate"]
    assert services["migrate"]["restart"] == "no"


def test_compose_kafka_advertises_what_the_services_bootstrap_from() -> None:
    kafka_env = compose_env(compose_services()["kafka"])
    advertised = {urlsplit(item).netloc for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    listeners = {item.split("://")[0] for item in kafka_env["KAFKA_LISTENERS"].split(",")}
    assert kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    assert kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    for name, service in handoff_services().items():
        bootstrap = compose_env(service)["HANDOFF_KAFKA_BOOTSTRAP"].split(",")
        assert set(bootstrap) <= advertised, f"{name}: {bootstrap} is not an advertised listener {advertised}"


def test_compose_commands_are_cli_commands() -> None:
    services = handoff_services()
    assert services, "no compose service runs the handoff image"
    for name, service in services.items():
        argv = as_list(service.get("command")) or exec_form("CMD")
        assert cli_error(argv) is None, f"{name}: `handoff {' '.join(argv)}`: {cli_error(argv)}"


def test_every_service_runs_in_compose_and_kubernetes() -> None:
    choices = serve_choices()
    assert {"ingest", "scoring", "router", "notifier", "api"} <= choices
    in_compose = [served(service) for service in handoff_services().values()]
    deployments = {
        argv[2]
        for deployment in k8s("Deployment").values()
        for argv in map(k8s_argv, containers(deployment))
        if argv[:2] == ["handoff", "serve"]
    }
    for service in choices:
        assert service in in_compose, f"docker-compose.yml runs no `handoff serve {service}`"
        assert service in deployments, f"deploy/k8s has no Deployment running `handoff serve {service}`"
    assert in_compose.count("scoring") >= 2, "the demo runs two scoring consumers"


def test_compose_services_wait_for_migrations_and_infrastructure() -> None:
    services = compose_services()
    for name, service in handoff_services().items():
        depends = service.get("depends_on") or {}
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name == "migrate":
            continue
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["kafka"]["condition"] == "service_healthy", name
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            if condition["condition"] == "service_healthy":
                dependency = services[target]
                # Our image carries a HEALTHCHECK; the others need one in the compose file.
                has_check = "healthcheck" in dependency or dependency.get("image") == handoff_image()
                assert has_check, f"{name} waits for {target} to be healthy, but it has no health check"


def test_compose_ports_are_8080_inside_and_unique_outside() -> None:
    published = []
    for name, service in compose_services().items():
        if service.get("image") != handoff_image():
            continue
        env = compose_env(service)
        assert env.get("HANDOFF_HTTP_HOST", docker_env()["HANDOFF_HTTP_HOST"]) == "0.0.0.0", name
        assert int(env.get("HANDOFF_HTTP_PORT", HTTP_PORT)) == HTTP_PORT, name
        for spec in service.get("ports", []):
            assert port_target(spec) == HTTP_PORT, f"{name} publishes {spec}"
            published.append(port_published(spec))
    assert {served(compose_services()["ingest"]), served(compose_services()["api"])} == {"ingest", "api"}
    assert compose_services()["ingest"].get("ports") and compose_services()["api"].get("ports")
    assert len(published) == len(set(published)), f"host ports clash: {published}"


def test_compose_consumers_do_not_exceed_partitions() -> None:
    services = handoff_services()
    counts = {c: [served(s) for s in services.values()].count(c) for c in CONSUMERS}
    for service in services.values():
        partitions = int(compose_env(service)["HANDOFF_KAFKA_PARTITIONS"])
        assert max(counts.values()) <= partitions, f"{counts} consumers for {partitions} partitions"


def test_compose_config_points_crm_and_alerts_at_the_receivers() -> None:
    services = compose_services()
    (mount,) = {v for s in handoff_services().values() for v in s.get("volumes", [])}
    source, target, *_ = mount.split(":")
    assert all(compose_env(s)["HANDOFF_CONFIG"] == target for s in handoff_services().values())
    config = load_config(COMPOSE_FILE.parent / source)
    assert config.crm is not None
    urls = [config.crm.url] + [sink.url for sink in (config.alerts.webhook, config.alerts.pagerduty) if sink]
    for url in urls:
        parts = urlsplit(url)
        assert parts.hostname in services and parts.port == HTTP_PORT, f"{url} is not a compose receiver"
    assert urlsplit(config.crm.url).hostname == "crm-receiver"
    receiver_env = compose_env(services["crm-receiver"])
    for service in handoff_services().values():
        env = compose_env(service)
        missing = secret_env_names(config) - set(env)
        assert not missing, f"the compose config names secrets that are not set: {sorted(missing)}"
        assert config.crm.secret_env is not None
        assert default_of(receiver_env["RECEIVER_SIGNING_SECRET"]) == default_of(env[config.crm.secret_env])


def test_compose_images_are_pinned_or_ours() -> None:
    for name, service in compose_services().items():
        image = service["image"]
        assert (":" in image and not image.endswith(":latest")) or image == handoff_image(), (
            f"{name}: pin a version of {image}"
        )


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (v1) is not installed")
def test_docker_compose_validates_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- Kubernetes ------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    generated = {f for g in kustomization()["configMapGenerator"] for f in g.get("files", [])}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} - generated
    assert listed == on_disk, f"kustomization.yaml resources {sorted(listed)} != files {sorted(on_disk)}"
    namespaced = [doc["metadata"]["name"] for doc in k8s_docs() if "namespace" in doc.get("metadata", {})]
    assert not namespaced, f"keep the manifests namespace-agnostic: {namespaced}"


def test_k8s_deployments_probe_the_contract_endpoints_on_8080() -> None:
    deployments = k8s("Deployment")
    assert deployments
    for name, deployment in deployments.items():
        for container in containers(deployment):
            ready, alive = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
            assert ready["path"] == "/readyz", name
            assert alive["path"] == "/healthz", name
            assert container_port(container, ready["port"]) == HTTP_PORT, name
            assert container_port(container, alive["port"]) == HTTP_PORT, name
            assert [p["containerPort"] for p in container["ports"]] == [HTTP_PORT], name
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            assert int(annotations["prometheus.io/port"]) == HTTP_PORT
            assert annotations["prometheus.io/path"] == "/metrics"


def test_k8s_commands_are_cli_commands_and_images_agree_with_compose() -> None:
    workloads = {**k8s("Deployment"), **k8s("Job")}
    image_name = handoff_image().rsplit(":", 1)[0]
    assert image_name in {entry["name"] for entry in kustomization().get("images", [])}
    for name, workload in workloads.items():
        for container in containers(workload):
            assert container["image"] == handoff_image(), f"{name} runs {container['image']}"
            argv = k8s_argv(container)
            assert argv[0] == "handoff", f"{name}: {argv}"
            assert cli_error(argv[1:]) is None, f"{name}: `{' '.join(argv)}`: {cli_error(argv[1:])}"


def test_k8s_services_expose_ingest_and_api_on_8080() -> None:
    deployments = k8s("Deployment")
    exposed = set()
    for name, service in k8s("Service").items():
        selector = service["spec"]["selector"]
        (target,) = [
            d for d in deployments.values() if d["spec"]["template"]["metadata"]["labels"].items() >= selector.items()
        ]
        (container,) = containers(target)
        for port in service["spec"]["ports"]:
            assert port["port"] == HTTP_PORT, name
            assert container_port(container, port["targetPort"]) == HTTP_PORT, name
        exposed.add(k8s_argv(container)[2])
    assert exposed == {"ingest", "api"}


def test_k8s_pods_are_non_root_with_requests_and_limits() -> None:
    for name, workload in {**k8s("Deployment"), **k8s("Job")}.items():
        assert pod_spec(workload)["securityContext"]["runAsNonRoot"] is True, name
        for container in containers(workload):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{name}: {kind} need cpu and memory"


def test_k8s_env_comes_from_configmap_and_secret_and_config_is_mounted() -> None:
    env = env_configmap()
    config_path = Path(env["HANDOFF_CONFIG"])
    assert config_path == Path("/etc/handoff/handoff.yaml")
    assert env["HANDOFF_HTTP_HOST"] == "0.0.0.0" and int(env["HANDOFF_HTTP_PORT"]) == HTTP_PORT
    assert not {"HANDOFF_DATABASE_URL", "HANDOFF_API_TOKEN"} & set(env), "secrets belong in the Secret"
    (generator,) = kustomization()["configMapGenerator"]
    assert generator["files"] == [config_path.name]
    (secret,) = kustomization()["secretGenerator"]
    for name, workload in {**k8s("Deployment"), **k8s("Job")}.items():
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        for container in containers(workload):
            refs = {(k, v["name"]) for ref in container["envFrom"] for k, v in ref.items()}
            assert refs == {("configMapRef", "handoff-env"), ("secretRef", secret["name"])}, name
            mounts = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
            assert mounts, f"{name} does not mount the config at {config_path.parent}"
            assert volumes[mounts[0]["name"]]["configMap"]["name"] == generator["name"], name


def test_k8s_secret_provides_every_secret_the_config_names() -> None:
    config = load_config(K8S / "handoff.yaml")
    keys = set(secrets_example())
    missing = ({"HANDOFF_DATABASE_URL", "HANDOFF_API_TOKEN"} | secret_env_names(config)) - keys
    assert not missing, f"secrets.env.example lacks {sorted(missing)}"
    assert (K8S / ".gitignore").read_text(encoding="utf-8").split().count("secrets.env") == 1


def test_k8s_consumers_autoscale_within_the_partition_count() -> None:
    partitions = int(env_configmap()["HANDOFF_KAFKA_PARTITIONS"])
    deployments = k8s("Deployment")
    scaled = set()
    for name, hpa in k8s("HorizontalPodAutoscaler").items():
        spec = hpa["spec"]
        target = deployments[spec["scaleTargetRef"]["name"]]
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert 1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"] <= partitions, (
            f"{name}: maxReplicas {spec['maxReplicas']} > {partitions} partitions: extra consumers would idle"
        )
        assert "replicas" not in target["spec"], f"{name}: the HPA owns the replica count"
        scaled.add(k8s_argv(containers(target)[0])[2])
    assert scaled == set(CONSUMERS)
    for deployment in deployments.values():
        assert deployment["spec"].get("replicas", 1) <= partitions


def test_k8s_migration_job_runs_migrate_once() -> None:
    (job,) = k8s("Job").values()
    (container,) = containers(job)
    assert k8s_argv(container) == ["handoff", "migrate"]
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_and_wires_the_generated_names(tmp_path: Path) -> None:
    work = tmp_path / "k8s"
    shutil.copytree(K8S, work)
    shutil.copy(work / "secrets.env.example", work / "secrets.env")
    result = subprocess.run(
        ["kubectl", "kustomize", str(work)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    names: dict[str, set[str]] = {d["kind"]: set() for d in docs}
    for doc in docs:
        names[doc["kind"]].add(doc["metadata"]["name"])
    (config_map,) = [n for n in names["ConfigMap"] if n.startswith("handoff-config-")]
    (secret,) = names["Secret"]
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            spec = pod_spec(doc)
            assert {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v} == {config_map}
            refs = {r["secretRef"]["name"] for c in spec["containers"] for r in c["envFrom"] if "secretRef" in r}
            assert refs == {secret}
