"""The deployment files (infra/deploy/compose.yaml, infra/deploy/k8s/) agree with the code: topics, settings,
groups, kinds."""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from infra.stack.components import KINDS, plan
from jetbridge.airlines import AirlineRegistry, load_registry
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import TopicSpec, declared_topics

DEPLOY = REPO_ROOT / "infra" / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DEPLOY_REGISTRY = K8S / "airlines.toml"

Doc = dict[str, Any]

# Read by the simulators' own argument parser (infra/simulators/__main__.py), not by Settings.
SIMULATOR_ENV = {"JB_SIM_LATENCY_MS", "JB_SIM_JITTER_MS", "JB_SIM_FAULTS", "JB_SIM_WEBHOOK_URL"}
# What every deployment must tell every Jetbridge process (the defaults name 127.0.0.1).
REQUIRED = {"KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "REDIS_URL", "JB_AUTH_ISSUER", "JB_AIRLINES_FILE"}


def _aliases() -> set[str]:
    return {str(f.validation_alias) for f in Settings.model_fields.values() if f.validation_alias}


def _registry() -> AirlineRegistry:
    return load_registry(DEPLOY_REGISTRY)


def _k8s_docs() -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    return docs


def _kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _compose() -> Doc:
    loaded: Doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def _config_map() -> dict[str, str]:
    (env,) = [d for d in _kind(_k8s_docs(), "ConfigMap") if d["metadata"]["name"] == "jetbridge-env"]
    data: dict[str, str] = env["data"]
    return data


def _is_jetbridge_image(image: str) -> bool:
    return image.split(":")[0] == "jetbridge"


def _workloads(docs: list[Doc]) -> list[Doc]:
    """Every Deployment and StatefulSet."""
    return _kind(docs, "Deployment") + _kind(docs, "StatefulSet")


def _jetbridge_containers(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for workload in _workloads(docs):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            if _is_jetbridge_image(container["image"]):
                yield workload["metadata"]["name"], container


def _jetbridge_services(compose: Doc) -> dict[str, Doc]:
    return {name: s for name, s in compose["services"].items() if _is_jetbridge_image(s.get("image", ""))}


def _secret_env(name: str) -> set[str]:
    """The keys of a kustomize-generated Secret, from the committed .example of its env file."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    (generator,) = [g for g in kustomization["secretGenerator"] if g["name"] == name]
    keys: set[str] = set()
    for env_file in generator["envs"]:
        for line in (K8S / f"{env_file}.example").read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                keys.add(line.split("=", 1)[0].strip())
    return keys


def topic_mismatches(docs: list[Doc], specs: list[TopicSpec]) -> list[str]:
    """Every way the KafkaTopic resources differ from the declared topics, one line each."""
    found = {d["spec"].get("topicName", d["metadata"]["name"]): d for d in _kind(docs, "KafkaTopic")}
    wanted = {s.name: s for s in specs}
    problems = [f"{name}: declared in jetbridge/topics.py, no KafkaTopic" for name in sorted(wanted.keys() - found)]
    problems += [f"{name}: a KafkaTopic that is not declared" for name in sorted(found.keys() - wanted)]
    for name in sorted(wanted.keys() & found.keys()):
        spec, doc = wanted[name], found[name]["spec"]
        config = {k: str(v) for k, v in doc.get("config", {}).items()}
        if doc.get("partitions") != spec.partitions:
            problems.append(f"{name}: partitions {doc.get('partitions')}, declared {spec.partitions}")
        for key, value in spec.configs().items():
            if config.get(key) != value:
                problems.append(f"{name}: {key} {config.get(key)}, declared {value}")
    return problems


def env_problems(names: set[str], registry: AirlineRegistry) -> list[str]:
    """The names that no Jetbridge process reads."""
    credentials = {a.credential for a in registry if a.credential}
    allowed = _aliases() | credentials | SIMULATOR_ENV
    return sorted(f"{n}: not a Settings alias, an airline credential or a simulator variable" for n in names - allowed)


def _compose_env_names(compose: Doc) -> set[str]:
    return {name for s in _jetbridge_services(compose).values() for name in s.get("environment", {})}


def _k8s_env_names(docs: list[Doc]) -> set[str]:
    names = set(_config_map()) | _secret_env("jetbridge-secrets") | _secret_env("jetbridge-airline-credentials")
    for _, container in _jetbridge_containers(docs):
        names |= {e["name"] for e in container.get("env", [])}
    return names


# --- syntax ---------------------------------------------------------------------------------------------------


def test_every_deployment_file_parses_and_each_k8s_object_is_named() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert COMPOSE in files
    assert len(files) > 5
    for path in files:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc is None or isinstance(doc, dict), path
    for doc in _k8s_docs():
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), f"{doc['kind']} {name}: not a Kubernetes name"


def test_kustomization_lists_every_manifest_and_its_generated_files() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    for generator in kustomization["configMapGenerator"]:
        assert all((K8S / f).is_file() for f in generator["files"])
    ignored = (K8S / ".gitignore").read_text(encoding="utf-8").split()
    for generator in kustomization["secretGenerator"]:
        for env_file in generator["envs"]:
            # The real secrets are made from the example and never committed.
            assert (K8S / f"{env_file}.example").is_file()
            assert env_file in ignored


def test_compose_file_passes_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker client here has no compose plugin (`docker compose version` fails)")
    env = {"JB_PII_KEY": "x" * 43, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, env=env)
    assert done.returncode == 0, done.stderr.decode()


# --- topics ---------------------------------------------------------------------------------------------------


def test_every_declared_topic_is_a_kafka_topic_with_its_partitions_retention_and_cleanup() -> None:
    docs = _k8s_docs()
    specs = declared_topics(_registry(), int(_config_map()["JB_TOPIC_PARTITIONS"]))
    assert topic_mismatches(docs, specs) == []
    (cluster,) = _kind(docs, "Kafka")
    for topic in _kind(docs, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster["metadata"]["name"]


def test_topic_check_names_each_topic_that_drifted() -> None:
    docs = copy.deepcopy(_k8s_docs())
    topics = {d["spec"]["topicName"]: d for d in _kind(docs, "KafkaTopic")}
    topics["jb.dlq.v1"]["spec"]["config"]["retention.ms"] = 1
    topics["jb.orders.v1"]["spec"]["config"]["cleanup.policy"] = "delete"
    topics["jb.requests.v1"]["spec"]["partitions"] = 12
    docs.remove(topics["jb.airline.BA.calls.v1"])
    problems = topic_mismatches(docs, declared_topics(_registry(), 6))
    assert problems == [
        "jb.airline.BA.calls.v1: declared in jetbridge/topics.py, no KafkaTopic",
        "jb.dlq.v1: retention.ms 1, declared 1209600000",
        "jb.orders.v1: cleanup.policy delete, declared compact",
        "jb.requests.v1: partitions 12, declared 6",
    ]
    extra = [*docs, {"kind": "KafkaTopic", "metadata": {"name": "jb.old.v1"}, "spec": {"partitions": 1}}]
    assert "jb.old.v1: a KafkaTopic that is not declared" in topic_mismatches(extra, declared_topics(_registry(), 6))


def test_deploy_registry_is_the_shipped_one_with_endpoints_at_the_simulators() -> None:
    def without_endpoints(path: Path) -> dict[str, Any]:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        data.pop("private_endpoints_allowed")
        for airline in data["airlines"].values():
            airline.pop("endpoint")
        return data

    assert without_endpoints(DEPLOY_REGISTRY) == without_endpoints(REPO_ROOT / "connectors" / "airlines.toml")
    assert all(a.endpoint.startswith("http://simulators:") for a in _registry())


# --- settings -------------------------------------------------------------------------------------------------


def test_every_env_var_the_deployments_set_is_one_a_process_reads() -> None:
    registry = _registry()
    assert env_problems(_compose_env_names(_compose()), registry) == []
    assert env_problems(_k8s_env_names(_k8s_docs()), registry) == []
    simulators_main = (REPO_ROOT / "infra" / "simulators" / "__main__.py").read_text(encoding="utf-8")
    assert all(f'"{name}"' in simulators_main for name in SIMULATOR_ENV)
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    image_env = set(re.findall(r"^\s*(?:ENV\s+)?([A-Z][A-Z0-9_]*)=", dockerfile, re.MULTILINE))
    assert {"JB_HOME", "JB_LOG_FORMAT"} <= image_env
    assert env_problems({n for n in image_env if not n.startswith(("PYTHON", "PIP_"))}, registry) == []


def test_env_check_names_a_variable_no_process_reads() -> None:
    compose = copy.deepcopy(_compose())
    compose["services"]["bridge"]["environment"]["JB_BRIDGE_PORTT"] = "8080"
    compose["services"]["connectors"]["environment"]["JB_CREDENTIAL_ZZ"] = "x"
    assert env_problems(_compose_env_names(compose), _registry()) == [
        "JB_BRIDGE_PORTT: not a Settings alias, an airline credential or a simulator variable",
        "JB_CREDENTIAL_ZZ: not a Settings alias, an airline credential or a simulator variable",
    ]


def test_compose_gives_every_process_the_settings_a_deployment_must_set() -> None:
    services = _jetbridge_services(_compose())
    for name, service in services.items():
        assert set(service["environment"]) >= REQUIRED, name
        assert service["build"]["dockerfile"] == "infra/deploy/Dockerfile"
    for name in ("bridge", "connectors"):
        assert services[name]["environment"]["JB_PII_KEY"].startswith("${JB_PII_KEY:?"), "from the shell, required"
    credentials = {a.credential for a in _registry()}
    assert credentials <= set(services["connectors"]["environment"])
    assert not any(credentials & set(s["environment"]) for n, s in services.items() if n != "connectors")


def test_the_workers_endpoints_listen_beyond_the_containers_loopback() -> None:
    """Probes from the orchestrator and the airlines' order webhooks come from outside the container: a worker
    listening on the default 127.0.0.1 would answer neither."""
    assert Settings().health_host == "127.0.0.1", "on a machine: this machine only"
    every_interface = "0.0.0.0"  # noqa: S104 - in a container's own network namespace
    assert _config_map()["JB_HEALTH_HOST"] == every_interface
    services = _jetbridge_services(_compose())
    for name in ("streams", "connectors"):
        assert services[name]["environment"]["JB_HEALTH_HOST"] == every_interface, name


def test_k8s_takes_settings_from_the_config_map_and_secrets_from_secrets() -> None:
    docs = _k8s_docs()
    assert set(_config_map()) >= REQUIRED
    assert "JB_PII_KEY" not in _config_map()
    assert "JB_PII_KEY" in _secret_env("jetbridge-secrets")
    credentials = _secret_env("jetbridge-airline-credentials")
    assert credentials == {a.credential for a in _registry()}
    for name, container in _jetbridge_containers(docs):
        assert {"configMapRef": {"name": "jetbridge-env"}} in container["envFrom"], name
        env = {e["name"]: e for e in container.get("env", [])}
        if name == "bridge" or name.startswith("connectors-"):
            ref = env["JB_PII_KEY"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "jetbridge-secrets", "key": "JB_PII_KEY"}, name
        held = {n for n in env if n in credentials}
        if name.startswith("connectors-"):
            # Only its own airline's credential: a connector pod holds no other airline's key.
            code = container["command"][container["command"].index("--airline") + 1]
            assert held == {f"JB_CREDENTIAL_{code}"}, name
            assert env[f"JB_CREDENTIAL_{code}"]["valueFrom"]["secretKeyRef"]["name"] == "jetbridge-airline-credentials"
        else:
            assert held == set(), f"{name} must not hold airline credentials"


# --- processes ------------------------------------------------------------------------------------------------


def _modules() -> dict[str, str]:
    """Each process kind's module, as the local stack runs it."""
    specs = plan(Settings(JB_AUTH="on", JB_AUTH_DEV_ISSUER=True)).instances
    return {s.kind: s.argv[s.argv.index("-m") + 1] for s in specs}


def test_compose_runs_every_process_kind_of_the_stack_as_its_own_service() -> None:
    services = _compose()["services"]
    modules = _modules()
    assert set(modules) == set(KINDS)
    for kind in KINDS:
        assert services[kind]["command"][:3] == ["python", "-m", modules[kind]], kind
        assert services[kind]["healthcheck"]["test"][1:3] == ["python", "infra/deploy/healthcheck.py"], kind
    assert services["topics"]["command"] == ["jetbridge", "topics", "apply"]
    assert {"kafka", "schema-registry", "redis"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")


def test_k8s_has_a_workload_per_kind_and_a_connector_workload_per_airline() -> None:
    docs = _k8s_docs()
    modules = _modules()
    commands = {name: c["command"] for name, c in _jetbridge_containers(docs)}
    for kind in KINDS:
        if kind != "connectors":
            assert commands[kind] == ["python", "-m", modules[kind]], kind
    for airline in _registry():
        name = f"connectors-{airline.code.lower()}"
        assert commands[name] == ["python", "-m", modules["connectors"], "--airline", airline.code]
    (pool,) = _kind(docs, "KafkaNodePool")
    (kafka,) = _kind(docs, "Kafka")
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"


def test_every_workload_has_probes_and_resources() -> None:
    docs = _k8s_docs()
    assert _kind(docs, "Deployment")
    assert _kind(docs, "StatefulSet")
    for deployment in _workloads(docs):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert "readinessProbe" in container, where
            assert "livenessProbe" in container, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                check = container.get(probe, {})
                if "httpGet" in check:
                    assert check["httpGet"]["port"] in ports, f"{where} {probe}: no port {check['httpGet']['port']}"
                if "exec" in check and _is_jetbridge_image(container["image"]):
                    # The worker's /health is on JB_HEALTH_PORT (the ConfigMap's), read by the probe in the pod.
                    assert check["exec"]["command"][:2] == ["python", "infra/deploy/healthcheck.py"], where
                    assert int(_config_map()["JB_HEALTH_PORT"]) in {p["containerPort"] for p in container["ports"]}


def test_stream_and_connector_workers_are_stateful_sets_with_their_services() -> None:
    """Their pod names are their JB_INSTANCE, the static member id they join their groups with: a StatefulSet keeps
    a restarted pod's name, so it takes its partitions back at once. Each connector set's Service carries the
    airline's order webhooks, and the simulated airlines are pointed at it."""
    docs = _k8s_docs()
    sets = {s["metadata"]["name"]: s for s in _kind(docs, "StatefulSet")}
    services = {s["metadata"]["name"]: s for s in _kind(docs, "Service")}
    wanted = {"streams"} | {f"connectors-{a.code.lower()}" for a in _registry()}
    assert set(sets) == wanted
    for name, workload in sets.items():
        spec = workload["spec"]
        assert spec["podManagementPolicy"] == "Parallel", name
        governing = services[spec["serviceName"]]
        assert governing["spec"]["selector"] == spec["selector"]["matchLabels"], name
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        instance = next(e for e in container["env"] if e["name"] == "JB_INSTANCE")
        assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", name
    for airline in _registry():
        service = services[f"connectors-{airline.code.lower()}"]
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
            (int(_config_map()["JB_HEALTH_PORT"]), "health")
        ]
    (simulators,) = [w for w in _workloads(docs) if w["metadata"]["name"] == "simulators"]
    env = {e["name"]: e.get("value") for e in simulators["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JB_SIM_WEBHOOK_URL"] == "http://connectors-{code}:9300/webhooks/{code}"


def _group_patterns() -> list[re.Pattern[str]]:
    """The consumer groups the code joins, as patterns (``{code}`` an airline), with no JB_TOPIC_PREFIX."""
    sources = [REPO_ROOT / "connectors" / "service.py", REPO_ROOT / "streams" / "app.py"]
    templates = {
        m.group(1)
        for path in sources
        for m in re.finditer(r'f"\{settings\.topic_prefix\}([^"]+)"', path.read_text(encoding="utf-8"))
    }
    assert {"jetbridge-streams", "jb.connector.{code}", "jb.orders.{w.airline.code}"} <= templates
    return [re.compile(re.sub(r"\\\{[^}]*\\\}", "(?P<code>[A-Z0-9]{2})", re.escape(t))) for t in templates]


def test_each_keda_trigger_scales_on_a_group_the_code_joins_and_a_topic_it_reads() -> None:
    docs = _k8s_docs()
    patterns = _group_patterns()
    topics = {s.name: s for s in declared_topics(_registry(), int(_config_map()["JB_TOPIC_PARTITIONS"]))}
    workloads = {(w["kind"], w["metadata"]["name"]): w for w in _workloads(docs)}
    scaled = _kind(docs, "ScaledObject")
    groups: set[str] = set()
    for obj in scaled:
        ref = obj["spec"]["scaleTargetRef"]
        target = ref["name"]
        assert (ref.get("kind", "Deployment"), target) in workloads, ref
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "kafka"
            assert meta["bootstrapServers"] == _config_map()["KAFKA_BOOTSTRAP_SERVERS"]
            match = next((m for p in patterns if (m := p.fullmatch(meta["consumerGroup"]))), None)
            assert match is not None, f"{target}: group {meta['consumerGroup']} is joined by no code"
            assert meta["topic"] in topics, meta["topic"]
            # More members than partitions would sit idle.
            assert obj["spec"]["maxReplicaCount"] <= topics[meta["topic"]].partitions, target
            if "code" in match.groupdict():
                assert target == f"connectors-{match['code'].lower()}"
                assert f".{match['code']}." in meta["topic"]
            groups.add(meta["consumerGroup"])
    codes = [a.code for a in _registry()]
    assert groups == {"jetbridge-streams"} | {f"jb.{g}.{c}" for c in codes for g in ("connector", "orders")}


def test_keda_check_refuses_a_group_no_code_joins() -> None:
    patterns = _group_patterns()
    assert any(p.fullmatch("jb.connector.BA") for p in patterns)
    assert not any(
        p.fullmatch(name) for p in patterns for name in ("jb.streams", "jb.connector.ba", "jb.connectors.BA")
    )


# --- the probe ------------------------------------------------------------------------------------------------


def _healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A /health endpoint on 127.0.0.1 answering with the status in ``state["status"]``."""
    state = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status": "degraded"}' if state["status"] != 200 else b'{"status": "ok"}'
            self.send_response(state["status"] if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_probe_is_ready_only_on_200_and_alive_on_503(
    health_server: tuple[int, dict[str, int]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port, state = health_server
    main = _healthcheck().main
    monkeypatch.setenv("JB_HEALTH_PORT", str(port))
    assert main([]) == 0
    state["status"] = 503
    assert main([]) == 1
    assert "503" in capsys.readouterr().err
    assert main(["--live"]) == 0
    state["status"] = 500  # a broken process is not alive either
    assert main(["--live"]) == 1
    state["status"] = 200
    assert main(["--url", f"http://127.0.0.1:{port}/other"]) == 1


def test_probe_fails_clearly_without_a_health_port_or_a_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main = _healthcheck().main
    monkeypatch.delenv("JB_HEALTH_PORT", raising=False)
    assert main([]) == 1
    assert "JB_HEALTH_PORT is not set" in capsys.readouterr().err
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    monkeypatch.setenv("JB_HEALTH_PORT", str(port))
    assert main(["--live"]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
