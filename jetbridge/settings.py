"""Process settings, read once at the process edge from the environment (and `.env` if present).

Kafka keys map 1:1 to librdkafka names where they are Kafka client settings. Inner modules never read
the environment: they receive plain arguments.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["REPO_ROOT", "Settings", "get_settings"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything a Jetbridge process can be told from outside."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Bootstrap servers of the cluster to use; the local stack's broker by default.",
    )
    schema_registry_url: str = Field(
        default="http://127.0.0.1:8081",
        validation_alias="SCHEMA_REGISTRY_URL",
        description="Base URL of a Confluent-compatible schema registry API.",
    )
    schema_registry_auth: SecretStr | None = Field(
        default=None,
        validation_alias="SCHEMA_REGISTRY_BASIC_AUTH",
        description="user:password for the registry, if it wants one.",
    )
    # The shared cache (jetbridge/redis_client.py): the local stack's Redis (infra/redis/redis.sh) by default;
    # any other, credentials and TLS (rediss://) included, by its URL. When set, `jetbridge up` starts none.
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    # The offer cache (jetbridge/offer_cache.py; README "The offer cache"): on, the router answers fresh repeats
    # from Redis and the connectors fill it, coalesce identical calls and stand in stale answers; off: every
    # search calls the airlines. How long an answer stays fresh is each airline's (registry: cache.fresh_s).
    cache: Literal["on", "off"] = Field(default="on", validation_alias="JB_OFFER_CACHE")

    home: Path = Field(default=REPO_ROOT / ".jetbridge", validation_alias="JB_HOME")
    log_format: str = Field(default="auto", validation_alias="JB_LOG_FORMAT")  # auto | json | console
    log_level: str = Field(default="INFO", validation_alias="JB_LOG_LEVEL")
    # Spans of every hop (jetbridge/tracing.py; README "Tracing"): auto is otlp when OTEL_EXPORTER_OTLP_ENDPOINT
    # is set, else off; file: JSON lines under $JB_HOME/traces/, what `jetbridge trace` reads.
    tracing: Literal["auto", "off", "file", "console", "otlp"] = Field(default="auto", validation_alias="JB_TRACING")
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")

    bridge_host: str = Field(default="127.0.0.1", validation_alias="JB_BRIDGE_HOST")
    bridge_port: int = Field(default=8080, validation_alias="JB_BRIDGE_PORT")
    default_deadline_ms: int = Field(default=3000, ge=200, validation_alias="JB_DEFAULT_DEADLINE_MS")
    max_deadline_ms: int = Field(default=15000, ge=200, validation_alias="JB_MAX_DEADLINE_MS")
    default_max_offers: int = Field(default=20, ge=1, validation_alias="JB_DEFAULT_MAX_OFFERS")
    currency: str = Field(default="USD", validation_alias="JB_CURRENCY")
    # The bridge's boundary (mcp_bridge/boundary.py). Sessions: a cap in all and one per client (x-client-id,
    # or the address of an anonymous one), so one client cannot take every session; an idle session ends
    # after bridge_session_idle_s. At about 40 kB a session, the total cap bounds the bridge's memory.
    bridge_max_sessions: int = Field(default=1000, ge=1, validation_alias="JB_BRIDGE_MAX_SESSIONS")
    # 64: room for a host running many anonymous agents at once (tests/chaos runs 20 concurrent ones from
    # 127.0.0.1; 16 refused four of them), still a bound of a few MB per client.
    bridge_max_sessions_per_client: int = Field(default=64, ge=1, validation_alias="JB_BRIDGE_MAX_SESSIONS_PER_CLIENT")
    bridge_session_idle_s: float = Field(default=300.0, gt=0, validation_alias="JB_BRIDGE_SESSION_IDLE_S")
    # A search's request is a few hundred bytes; a larger body is refused (413) before it is read whole.
    bridge_max_body_bytes: int = Field(default=256 * 1024, ge=1024, validation_alias="JB_BRIDGE_MAX_BODY_BYTES")

    airlines_file: Path | None = Field(
        default=None,
        validation_alias="JB_AIRLINES_FILE",
        description="Airline registry (TOML); the one shipped in connectors/registry/ by default.",
    )
    simulator_host: str = Field(default="127.0.0.1", validation_alias="JB_SIM_HOST")
    simulator_control_port: int = Field(default=9100, validation_alias="JB_SIM_CONTROL_PORT")

    # librdkafka producer tuning for the request path (low latency over batching).
    # 0: every produce goes out at once. Measured with `jetbridge bench --rates 10,20,30` (issue 8): at 1 ms,
    # added latency p50 20 ms at 20/s; at 0, 8 ms, CPU per search unchanged within the run-to-run spread (a
    # search's calls are queued in one event-loop turn and still share a produce request).
    producer_linger_ms: int = Field(default=0, ge=0, validation_alias="JB_PRODUCER_LINGER_MS")
    # Time a connector keeps back from the request's deadline, so its response still reaches the
    # aggregator before the aggregator answers.
    connector_deadline_margin_ms: int = Field(default=250, validation_alias="JB_CONNECTOR_MARGIN_MS")
    connector_concurrency: int = Field(default=32, ge=1, validation_alias="JB_CONNECTOR_CONCURRENCY")
    aggregator_tick_ms: int = Field(default=50, ge=10, validation_alias="JB_AGGREGATOR_TICK_MS")
    # How far back a stream worker reads the reply topic when it takes partitions over, to learn which
    # requests were already answered (the guard against a second reply after a crash). A request met
    # again later than this after its deadline is dead-lettered as expired instead of answered.
    aggregator_reply_window_s: int = Field(default=600, ge=30, validation_alias="JB_AGGREGATOR_REPLY_WINDOW_S")
    topic_partitions: int = Field(default=6, ge=1, validation_alias="JB_TOPIC_PARTITIONS")
    # Put before every topic name (and the streams' consumer group): lets tests, or two stacks sharing one
    # cluster, run side by side with topics and groups of their own. Empty in production.
    topic_prefix: str = Field(default="", validation_alias="JB_TOPIC_PREFIX")

    # Which instance of its kind this process is ("streams-2"); the local stack's supervisor sets it, an
    # orchestrator sets it from the pod name. It names the static group membership, so a restarted
    # instance takes its partitions back at once instead of waiting for its old session to expire.
    instance: str = Field(default="", validation_alias="JB_INSTANCE")
    # Where the process serves GET /health (and later /metrics) for the supervisor and orchestrator
    # probes; 0 = no health endpoint. The bridge serves /health on its MCP port instead.
    health_port: int = Field(default=0, ge=0, validation_alias="JB_HEALTH_PORT")
    # The address it listens on: this machine only by default; 0.0.0.0 in a container, where the orchestrator's
    # probes and the airlines' order webhooks (connectors) come from outside the process's network namespace.
    health_host: str = Field(default="127.0.0.1", validation_alias="JB_HEALTH_HOST")
    # Consumer group liveness: a member that stops heartbeating loses its partitions after this long.
    # Kept short (the broker's default minimum is 6 s) so a dead worker costs seconds, not a minute.
    group_session_timeout_ms: int = Field(default=6000, ge=1000, validation_alias="JB_GROUP_SESSION_TIMEOUT_MS")
    replication_factor: int = Field(default=1, ge=1, validation_alias="JB_REPLICATION_FACTOR")

    # The local stack's port plan for worker health endpoints: streams-N serves /health on base + N,
    # connectors-N on base + 50 + N. A base, not a list, so a test session can move them all at once.
    health_port_base: int = Field(default=9300, ge=1, le=65000, validation_alias="JB_HEALTH_PORT_BASE")
    # How long the local stack's supervisor lets a process shut down after SIGTERM before SIGKILL.
    stop_grace_s: float = Field(default=20.0, gt=0, validation_alias="JB_STOP_GRACE_S")
    # How long `jetbridge up` waits for every instance to be healthy.
    up_timeout_s: float = Field(default=180.0, gt=0, validation_alias="JB_UP_TIMEOUT_S")

    # The client registry (TOML): which airlines each agent may search, how often and how much; the one in
    # mcp_bridge/clients.toml by default (README "Clients and their allowance").
    clients_file: Path | None = Field(default=None, validation_alias="JB_CLIENTS_FILE")
    # Searches one bridge process holds waiting for their replies; a search beyond it is shed at once
    # (rate_limited) instead of queueing without bound.
    bridge_max_in_flight: int = Field(default=1000, ge=1, validation_alias="JB_BRIDGE_MAX_IN_FLIGHT")
    # Where the clients' allowances are counted (mcp_bridge/allowances.py): shared, in Redis (REDIS_URL), so
    # every bridge instance spends the same ones, falling back to this process while Redis does not answer;
    # local: in this process only (each instance enforces the whole allowance).
    allowances: Literal["shared", "local"] = Field(default="shared", validation_alias="JB_ALLOWANCES")

    # Who may call the bridge (mcp_bridge/auth.py, README "Agents authenticate"). on: a bearer token on every
    # request to /mcp, an OAuth 2.1 JWT from `auth_issuer` (audience the bridge's resource URI) or an API key
    # of `api_keys_file`; off: anyone, named by its x-client-id header (a development switch, never exposed).
    auth: Literal["on", "off"] = Field(default="on", validation_alias="JB_AUTH")
    # The authorization server whose tokens the bridge accepts (its `iss`); the development issuer by default.
    auth_issuer: str = Field(default="http://127.0.0.1:9400", validation_alias="JB_AUTH_ISSUER")
    # Whether `jetbridge up` runs the development issuer (infra/auth/dev_issuer.py) at auth_issuer; false when
    # auth_issuer names the organisation's own authorization server.
    auth_dev_issuer: bool = Field(default=True, validation_alias="JB_AUTH_DEV_ISSUER")
    # The machine clients' API keys, stored as hashes (mcp_bridge/api_keys.py; `jetbridge keys`);
    # $JB_HOME/auth/api-keys.toml when unset.
    api_keys_file: Path | None = Field(default=None, validation_alias="JB_API_KEYS_FILE")
    # The bridge's resource URI (RFC 8707), the tokens' required audience; bridge_url when empty. Set it when
    # agents reach the bridge through another name (a proxy, 0.0.0.0).
    auth_resource: str = Field(default="", validation_alias="JB_AUTH_RESOURCE")
    # Where the issuer's signing keys are; read from its RFC 8414 metadata (`jwks_uri`) when empty.
    auth_jwks_url: str = Field(default="", validation_alias="JB_AUTH_JWKS_URL")
    # Clock skew allowed on exp/nbf/iat.
    auth_leeway_s: float = Field(default=30.0, ge=0, le=300, validation_alias="JB_AUTH_LEEWAY_S")
    # A token with an unknown key id refetches the key set at most this often, so forged kids cannot
    # make the bridge hammer the issuer; the set is also refreshed once it is this old.
    auth_jwks_min_refresh_s: float = Field(default=30.0, ge=0, validation_alias="JB_AUTH_JWKS_MIN_REFRESH_S")
    auth_jwks_max_age_s: float = Field(default=3600.0, gt=0, validation_alias="JB_AUTH_JWKS_MAX_AGE_S")

    # Passenger personal data travels on the order topics sealed (jetbridge/pii.py, AES-256-GCM), readable by the
    # bridge that sealed it and the connectors that call the airline, by nobody reading a topic or the DLQ. The
    # key: JB_PII_KEY (url-safe base64 of 32 bytes; a secret store fills it in production), else the file
    # $JB_HOME/secrets/pii.key, made (0600) by the first process that needs it on this machine.
    pii_key: SecretStr | None = Field(default=None, validation_alias="JB_PII_KEY")
    # Orders (README "Orders"): how long an order call may take, end to end, before the agent is told its
    # outcome is unknown (and that the same call again never books twice).
    order_deadline_ms: int = Field(default=12000, ge=1000, validation_alias="JB_ORDER_DEADLINE_MS")

    @property
    def pii_key_file(self) -> Path:
        return self.home / "secrets" / "pii.key"

    @property
    def state_dir(self) -> Path:
        """This instance's own folder for local state (faust's data, caches)."""
        return self.home / "state" / (self.instance or "default")

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def traces_dir(self) -> Path:
        return self.home / "traces"

    @property
    def tracing_mode(self) -> Literal["off", "file", "console", "otlp"]:
        """``JB_TRACING`` with ``auto`` decided: OTLP when an endpoint is set, else none (``file`` is asked for)."""
        if self.tracing != "auto":
            return self.tracing
        return "otlp" if self.otlp_endpoint else "off"

    @property
    def bridge_url(self) -> str:
        return f"http://{self.bridge_host}:{self.bridge_port}/mcp"

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.home / "auth" / "api-keys.toml"

    # How every Kafka client of the process (librdkafka and faust's aiokafka alike) authenticates to the
    # cluster; applied in one place, jetbridge/kafka.py `client_config` (README "Kafka security"). PLAINTEXT
    # (the local stack) needs none of the others. mTLS (a client certificate) is not supported.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(default=None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(default=None, validation_alias="KAFKA_SASL_PASSWORD")
    # PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); the system's CAs without it.
    kafka_ssl_ca_location: Path | None = Field(default=None, validation_alias="KAFKA_SSL_CA_LOCATION")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
