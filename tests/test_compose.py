"""docker-compose.yml: the services it names, settings it passes that the code knows, and (where the
``docker compose`` CLI is installed) the CLI's own validation, which needs no engine."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from conftest import REPO_ROOT

from contracts.settings import EndToEndSettings

COMPOSE = REPO_ROOT / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_names_the_servers_the_jobs_and_the_app():
    services = compose()["services"]
    assert {"redis", "redis-events", "elasticsearch", "feast", "triton", "app", "batch", "train", "feast-publish",
            "loaders"} <= set(services)
    for name in ("redis", "redis-events", "elasticsearch", "feast", "triton", "app"):
        assert "healthcheck" in services[name], name
    assert services["elasticsearch"]["image"].endswith(":8.19.3")  # the version the local script runs


def test_every_recsys_variable_in_compose_is_a_setting():
    fields = {f"RECSYS_{name.upper()}" for name in EndToEndSettings.model_fields}
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("RECSYS_"):
                assert variable in fields, f"{name}: {variable} is not a Settings field"


def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose CLI is not installed here")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                            text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
