"""Where Kafka, the schema registry and Redis come from, chosen automatically:

1. ``external``: ``KAFKA_BOOTSTRAP_SERVERS`` (and ``SCHEMA_REGISTRY_URL``) name a cluster that runs;
2. ``testcontainers``: a Docker engine answers, so containers are started (Apache Kafka's image in KRaft
   mode and the Apicurio registry image, whose Confluent-compatible API is used);
3. ``local``: the project's own scripts start Apache Kafka from the Maven Central jars and the local
   registry, as processes on this machine.

Redis is chosen on its own: ``REDIS_URL`` when it is set, used as is; otherwise the ``redis:7`` container
where Docker answers, else Debian's ``redis-server`` started by ``infra/redis/redis.sh``.

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

__all__ = ["Infra", "docker_available", "provide_infra", "select_backend", "select_redis_backend"]

KAFKA_IMAGE = "apache/kafka:4.2.0"
REGISTRY_IMAGE = "apicurio/apicurio-registry:3.0.9"
REDIS_IMAGE = "redis:7"


@dataclass(frozen=True)
class Infra:
    backend: str  # Kafka's and the registry's; Redis's is select_redis_backend(backend)
    bootstrap_servers: str
    registry_url: str
    redis_url: str


def docker_available() -> bool:
    """Whether a Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)  # noqa: S607
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _containers() -> bool:
    return os.environ.get("JB_USE_TESTCONTAINERS", "auto") != "never" and docker_available()


def select_backend() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return "external"
    if _containers():
        return "testcontainers"
    return "local"


def select_redis_backend(kafka_backend: str) -> str:
    """``external`` when ``REDIS_URL`` is set; otherwise Kafka's backend, or beside an external cluster the
    backend Kafka would have had without one."""
    if os.environ.get("REDIS_URL"):
        return "external"
    if kafka_backend == "external":
        return "testcontainers" if _containers() else "local"
    return kafka_backend


def _script(home: Path, name: str, action: str, ports: dict[str, int]) -> None:
    """``infra/<name>/<name>.sh action`` under ``home``, its messages appended to setup.log; a failed start raises."""
    env = dict(os.environ, JB_HOME=str(home)) | {key: str(port) for key, port in ports.items()}
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = REPO_ROOT / "infra" / name / f"{name}.sh"
    with (log_dir / "setup.log").open("ab") as log:
        result = subprocess.run(["/bin/bash", str(path), action], env=env, check=False, stdout=log, stderr=log)
    if result.returncode != 0 and action == "start":
        raise ConfigurationError(f"{name} did not start (see {log_dir}/setup.log and {log_dir}/{name}.log)")


@contextlib.contextmanager
def _external() -> Iterator[tuple[str, str]]:
    registry = os.environ.get("SCHEMA_REGISTRY_URL")
    if not registry:
        raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is set but SCHEMA_REGISTRY_URL is not")
    yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], registry


@contextlib.contextmanager
def _testcontainers() -> Iterator[tuple[str, str]]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
        registry = DockerContainer(REGISTRY_IMAGE).with_exposed_ports(8080)
        with registry:
            wait_for_logs(registry, "Installed features", timeout=120)
            host = registry.get_container_host_ip()
            port = registry.get_exposed_port(8080)
            yield kafka.get_bootstrap_server(), f"http://{host}:{port}/apis/ccompat/v7"


@contextlib.contextmanager
def _local(home: Path, kafka_port: int, registry_port: int) -> Iterator[tuple[str, str]]:
    ports = {"JB_KAFKA_PORT": kafka_port, "JB_KAFKA_CONTROLLER_PORT": kafka_port + 1, "JB_REGISTRY_PORT": registry_port}
    try:
        _script(home, "kafka", "start", ports)
        _script(home, "registry", "start", ports)
        yield f"127.0.0.1:{kafka_port}", f"http://127.0.0.1:{registry_port}"
    finally:
        _script(home, "registry", "stop", ports)
        _script(home, "kafka", "stop", ports)


@contextlib.contextmanager
def _redis(backend: str, home: Path, port: int) -> Iterator[str]:
    if backend == "external":
        yield os.environ["REDIS_URL"]
    elif backend == "testcontainers":
        from testcontainers.community.redis import RedisContainer

        with RedisContainer(REDIS_IMAGE) as redis:
            yield f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(redis.port)}/0"
    else:
        ports = {"JB_REDIS_PORT": port}
        try:
            _script(home, "redis", "start", ports)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _script(home, "redis", "stop", ports)


@contextlib.contextmanager
def provide_infra(
    home: Path, *, kafka_port: int = 19092, registry_port: int = 18081, redis_port: int = 16379
) -> Iterator[Infra]:
    """Kafka, a registry and Redis for the duration of the block, each from the first backend that applies."""
    backend = select_backend()
    with contextlib.ExitStack() as stack:
        if backend == "external":
            kafka, registry = stack.enter_context(_external())
        elif backend == "testcontainers":
            kafka, registry = stack.enter_context(_testcontainers())
        else:
            kafka, registry = stack.enter_context(_local(home, kafka_port, registry_port))
        redis = stack.enter_context(_redis(select_redis_backend(backend), home, redis_port))
        yield Infra(backend, kafka, registry, redis)
