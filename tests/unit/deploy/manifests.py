"""Loaders shared by the deploy tests: the Dockerfile, the compose file, the Kubernetes manifests, the CLI.

Parsing only; no container engine or cluster is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
HTTP_PORT = 8080
CONSUMERS = ("scoring", "router", "notifier")


# --- the CLI -----------------------------------------------------------------------------------------


@cache
def cli_parser() -> argparse.ArgumentParser:
    # The real parser: a renamed or removed command breaks these tests, not the deployment.
    from services.cli import build_parser

    return build_parser()


def cli_error(argv: list[str]) -> str | None:
    """None when ``handoff <argv>`` parses, else argparse's complaint."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            cli_parser().parse_args(argv)
    except SystemExit as exc:
        return stderr.getvalue().strip() or f"exit {exc.code}"
    return None


def serve_choices() -> set[str]:
    """The services ``handoff serve`` accepts, read from the parser."""
    parser = cli_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.choices["serve"]
    positional = next(a for a in serve._actions if not a.option_strings and a.choices)
    return set(positional.choices)


# --- Dockerfile --------------------------------------------------------------------------------------


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return tuple(instructions)


def docker_args(keyword: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == keyword]


def exec_form(keyword: str) -> list[str]:
    """The last ``keyword`` instruction in exec (JSON) form."""
    (*_, last) = docker_args(keyword)
    value = json.loads(last)
    assert isinstance(value, list), f'{keyword} must use the exec form ["..."]: {last}'
    return value


def docker_stages() -> list[str]:
    """Base image of each stage, with ARG defaults substituted."""
    defaults = {}
    for word, rest in dockerfile():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip()
    images = []
    for rest in docker_args("FROM"):
        image = rest.split()[0]
        images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image))
    return images


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in docker_args("ENV"):
        for pair in rest.split():
            name, _, value = pair.partition("=")
            env[name] = value
    return env


# --- compose ---------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    assert isinstance(services, dict)
    return services


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return value.split() if isinstance(value, str) else [str(v) for v in value]


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def default_of(value: str) -> str:
    """``${VAR:-default}`` -> ``default`` (what compose uses when VAR is unset)."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def port_target(spec: Any) -> int:
    if isinstance(spec, dict):
        return int(spec["target"])
    return int(str(spec).split("/")[0].rsplit(":", 1)[-1])


def port_published(spec: Any) -> int:
    if isinstance(spec, dict):
        return int(spec["published"])
    parts = str(spec).split("/")[0].split(":")
    return int(parts[-2])


# --- Kubernetes -----------------------------------------------------------------------------------


@cache
def kustomization() -> dict[str, Any]:
    data = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def k8s_docs() -> tuple[dict[str, Any], ...]:
    """Every document of every resource file the kustomization lists."""
    docs: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            if doc is not None:
                docs.append(doc)
    return tuple(docs)


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in k8s_docs() if doc["kind"] == kind}


def env_configmap() -> dict[str, str]:
    (configmap,) = k8s("ConfigMap").values()
    data = configmap["data"]
    assert isinstance(data, dict)
    return data


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    found = pod_spec(workload)["containers"]
    assert isinstance(found, list)
    return found


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, resolving a port name through the container's ports."""
    if isinstance(port, int):
        return port
    for spec in container.get("ports", []):
        if spec.get("name") == port:
            return int(spec["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def secrets_example() -> dict[str, str]:
    pairs = {}
    for line in (K8S / "secrets.env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


# --- configs ---------------------------------------------------------------------------------------


def secret_env_names(config: Any) -> set[str]:
    """Every environment variable a HandoffConfig names for a secret."""
    names = {name for source in config.sources for name in source.secret_env_names()}
    if config.crm is not None:
        names |= {n for n in (config.crm.secret_env, config.crm.token_env) if n}
    if config.alerts.pagerduty is not None and config.alerts.pagerduty.routing_key_env:
        names.add(config.alerts.pagerduty.routing_key_env)
    return names


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
