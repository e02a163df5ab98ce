"""Where Kafka and the schema registry come from, chosen automatically:

1. ``external``: ``KAFKA_BOOTSTRAP_SERVERS`` (and ``SCHEMA_REGISTRY_URL``) name a cluster that runs;
2. ``testcontainers``: a Docker engine answers, so containers are started (Apache Kafka's image in KRaft
   mode and the Apicurio registry image, whose Confluent-compatible API is used);
3. ``local``: the project's own scripts start Apache Kafka from the Maven Central jars and the local
   registry, as processes on this machine.

The tests use this; ``jetbridge up`` uses ``external`` or ``local`` (containers would die with the
command that started them). The local scripts' own messages go to ``$JB_HOME/logs/setup.log``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jetbridge.errors import ConfigurationError
from jetbridge.settings import REPO_ROOT

__all__ = ["Infra", "docker_available", "provide_infra", "select_backend"]

KAFKA_IMAGE = "apache/kafka:4.2.0"
REGISTRY_IMAGE = "apicurio/apicurio-registry:3.0.9"


@dataclass(frozen=True)
class Infra:
    backend: str
    bootstrap_servers: str
    registry_url: str


def docker_available() -> bool:
    """Whether a Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)  # noqa: S607
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def select_backend() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return "external"
    if os.environ.get("JB_USE_TESTCONTAINERS", "auto") != "never" and docker_available():
        return "testcontainers"
    return "local"


@contextlib.contextmanager
def _external() -> Iterator[Infra]:
    registry = os.environ.get("SCHEMA_REGISTRY_URL")
    if not registry:
        raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is set but SCHEMA_REGISTRY_URL is not")
    yield Infra("external", os.environ["KAFKA_BOOTSTRAP_SERVERS"], registry)


@contextlib.contextmanager
def _testcontainers() -> Iterator[Infra]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
        registry = DockerContainer(REGISTRY_IMAGE).with_exposed_ports(8080)
        with registry:
            wait_for_logs(registry, "Installed features", timeout=120)
            host = registry.get_container_host_ip()
            port = registry.get_exposed_port(8080)
            yield Infra("testcontainers", kafka.get_bootstrap_server(), f"http://{host}:{port}/apis/ccompat/v7")


@contextlib.contextmanager
def _local(home: Path, kafka_port: int, registry_port: int) -> Iterator[Infra]:
    env = dict(
        os.environ,
        JB_HOME=str(home),
        JB_KAFKA_PORT=str(kafka_port),
        JB_KAFKA_CONTROLLER_PORT=str(kafka_port + 1),
        JB_REGISTRY_PORT=str(registry_port),
    )

    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    def script(name: str, action: str) -> None:
        path = REPO_ROOT / "infra" / name / f"{name}.sh"
        with (log_dir / "setup.log").open("ab") as log:
            result = subprocess.run(["/bin/bash", str(path), action], env=env, check=False, stdout=log, stderr=log)
        if result.returncode != 0 and action == "start":
            raise ConfigurationError(f"{name} did not start (see {log_dir}/setup.log and {log_dir}/{name}.log)")

    try:
        script("kafka", "start")
        script("registry", "start")
        yield Infra("local", f"127.0.0.1:{kafka_port}", f"http://127.0.0.1:{registry_port}")
    finally:
        script("registry", "stop")
        script("kafka", "stop")


@contextlib.contextmanager
def provide_infra(home: Path, *, kafka_port: int = 19092, registry_port: int = 18081) -> Iterator[Infra]:
    """Kafka and a registry for the duration of the block, from the first backend that applies."""
    backend = select_backend()
    if backend == "external":
        with _external() as infra:
            yield infra
    elif backend == "testcontainers":
        with _testcontainers() as infra:
            yield infra
    else:
        with _local(home, kafka_port, registry_port) as infra:
            yield infra
