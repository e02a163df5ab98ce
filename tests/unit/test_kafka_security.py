"""Kafka client security (README "Kafka security"): one function gives every librdkafka client the cluster and
how to authenticate, faust gets the same, nothing changes for PLAINTEXT, and the password never reaches a log.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
from pathlib import Path
from typing import Any

import faust
import pytest
import structlog
from confluent_kafka import KafkaError as ClientError
from faust.types.auth import AuthProtocol, SASLMechanism

from jetbridge.errors import ConfigurationError, KafkaError
from jetbridge.kafka import AsyncConsumer, AsyncProducer, client_config, kafka_security
from jetbridge.log import configure_logging, get_logger
from jetbridge.runtime import kafka_config
from jetbridge.settings import Settings
from streams.credentials import broker_credentials

SECRET = "s3cret-Pa55word"  # made up; looked for in the logs


def settings(**env: Any) -> Settings:
    return Settings(KAFKA_BOOTSTRAP_SERVERS="broker-1:9092,broker-2:9092", **env)


def scram(**env: Any) -> Settings:
    return settings(
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_USERNAME="jetbridge", KAFKA_SASL_PASSWORD=SECRET, **env
    )


def test_plaintext_clients_get_exactly_the_config_they_had_before() -> None:
    assert client_config(settings()) == {"bootstrap.servers": "broker-1:9092,broker-2:9092"}
    assert kafka_config(settings(), "jb-x") == {"bootstrap.servers": "broker-1:9092,broker-2:9092", "client.id": "jb-x"}
    assert broker_credentials(kafka_security(settings())) is None


def test_sasl_settings_reach_every_librdkafka_client_config() -> None:
    config = kafka_config(scram(), "jb-bridge")
    assert config == {
        "bootstrap.servers": "broker-1:9092,broker-2:9092",
        "client.id": "jb-bridge",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "jetbridge",
        "sasl.password": SECRET,
    }


def test_sasl_ssl_with_a_ca_file_sets_the_ca_for_librdkafka_and_tls_for_faust(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(_SELF_SIGNED_CA)
    secured = settings(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        KAFKA_SASL_USERNAME="jetbridge",
        KAFKA_SASL_PASSWORD=SECRET,
        KAFKA_SSL_CA_LOCATION=str(ca),
    )
    config = client_config(secured)
    assert (config["security.protocol"], config["sasl.mechanism"], config["ssl.ca.location"]) == (
        "SASL_SSL",
        "SCRAM-SHA-256",
        str(ca),
    )
    credentials = broker_credentials(kafka_security(secured))
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol, credentials.mechanism) == (AuthProtocol.SASL_SSL, SASLMechanism.SCRAM_SHA_256)
    assert credentials.ssl_context is not None


def test_faust_gets_the_same_scram_credentials() -> None:
    credentials = broker_credentials(kafka_security(scram()))
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol, credentials.mechanism) == (AuthProtocol.SASL_PLAINTEXT, SASLMechanism.SCRAM_SHA_512)
    assert (credentials.username, credentials.password) == ("jetbridge", SECRET)
    assert SECRET not in repr(credentials)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"}, "set KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "set KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "PLAINTEXT but KAFKA_SASL_USERNAME"),
        ({"KAFKA_SSL_CA_LOCATION": "/etc/hostname"}, "PLAINTEXT but KAFKA_SSL_CA_LOCATION is set"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/nowhere/ca.pem"}, "not a readable file"),
    ],
)
def test_security_settings_that_cannot_work_stop_the_process_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        client_config(settings(**env))


def test_a_security_protocol_kafka_does_not_know_is_refused_when_settings_are_read() -> None:
    with pytest.raises(ValueError, match="KAFKA_SECURITY_PROTOCOL"):
        settings(KAFKA_SECURITY_PROTOCOL="SASL_PLAIN")


def test_the_password_is_not_in_the_reprs_of_settings_or_security() -> None:
    assert SECRET not in repr(scram())
    assert SECRET not in str(scram())
    assert SECRET not in repr(kafka_security(scram()))


def test_the_kafka_password_never_reaches_a_log_line(stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("INFO", "json", process="test")
    config = kafka_config(scram(), "jb-bridge")
    log = get_logger("test")
    log.info("a client config logged whole", config=config)
    log.info("its keys logged one by one", **{k.replace(".", "_"): v for k, v in config.items()})
    log.info("librdkafka's own name", **{"sasl.password": SECRET})
    log.info("the settings", settings=scram(), kafka_sasl_password=SECRET, security=kafka_security(scram()))
    with structlog.contextvars.bound_contextvars(KAFKA_SASL_PASSWORD=SECRET):
        log.info("bound as context")
    output = stderr.getvalue()
    assert SECRET not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 5
    assert lines[0]["config"]["sasl.password"] == "[redacted]"
    assert lines[0]["config"]["sasl.username"] == "jetbridge"  # what is not secret stays readable
    assert lines[1]["sasl_password"] == "[redacted]"


def test_keys_that_only_mention_tokens_are_not_redacted(stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("INFO", "json")
    get_logger("test").info("limits", tokens_left=3, token_error="expired", access_token="abc", airline="BA")
    (line,) = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert (line["tokens_left"], line["token_error"], line["access_token"], line["airline"]) == (
        3,
        "expired",
        "[redacted]",
        "BA",
    )


def _refuse_login(on_error: Any) -> None:
    # What librdkafka's poll thread calls when the broker refuses our SASL login.
    error = ClientError(
        ClientError._AUTHENTICATION,
        "SASL authentication error: Authentication failed during authentication due to invalid credentials "
        "with SASL mechanism SCRAM-SHA-512",
    )
    thread = threading.Thread(target=on_error, args=(error,))
    thread.start()
    thread.join()


async def test_a_send_waiting_when_the_login_is_refused_fails_naming_authentication() -> None:
    # Nothing listens on port 9: the send would wait for message.timeout.ms without the refusal.
    producer = AsyncProducer({"bootstrap.servers": "127.0.0.1:9"})
    try:
        sending = asyncio.ensure_future(producer.send("jb.t", key="k", value=b"v"))
        await asyncio.sleep(0.1)
        assert not sending.done()
        _refuse_login(producer._on_error)
        async with asyncio.timeout(5):
            with pytest.raises(KafkaError, match="Kafka authentication failed: SASL authentication error"):
                await sending
    finally:
        await producer.close(timeout_s=0.1)


async def test_a_consumer_whose_login_is_refused_raises_naming_authentication() -> None:
    consumer = AsyncConsumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "g"})
    try:
        _refuse_login(consumer._on_error)
        with pytest.raises(KafkaError, match="KAFKA_SASL_PASSWORD"):
            await consumer.consume(1, 0.01)
        assert await consumer.consume(1, 0.01) == []  # said once, not for ever
    finally:
        await consumer.close()


# A self-signed CA certificate (no key kept): librdkafka is given its path, faust's TLS context loads it.
_SELF_SIGNED_CA = """-----BEGIN CERTIFICATE-----
MIIBkDCCATWgAwIBAgIUdf162+EdDwTQ1H5BynMnIYAo7rIwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRamV0YnJpZGdlLXRlc3QtY2EwIBcNMjYxMTI2MDAxNjQwWhgP
MjEyNjExMDIwMDE2NDBaMBwxGjAYBgNVBAMMEWpldGJyaWRnZS10ZXN0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEwrrLcz5z1aveQIfWZBzx1684nxnugh4C
fpBESxPUw0qHETObl7eAYS869XE5qcIoaQbFem+9ZpvA5BYoFKOgwKNTMFEwHQYD
VR0OBBYEFNbeBjkgjzd305Odl1Ln064p0sqHMB8GA1UdIwQYMBaAFNbeBjkgjzd3
05Odl1Ln064p0sqHMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh
ALXUcTlLZUD2NYketofRmr+P09POof+ej6vOWSwaK8mQAiEAxgOp4vPuOY2zrNiZ
9CHJYBYE98zwq6PdLkzRpZO5zk8=
-----END CERTIFICATE-----
"""
