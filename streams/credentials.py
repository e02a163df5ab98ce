"""faust's ``broker_credentials``: the process's Kafka security (``jetbridge.kafka.kafka_security``, the same
one every librdkafka client gets) for the aiokafka clients faust creates, its consumer, producer and admin."""

from __future__ import annotations

import ssl

import faust
from faust.types.auth import CredentialsT

from jetbridge.kafka import KafkaSecurity

__all__ = ["broker_credentials"]


def broker_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """SASL (over TLS for SASL_SSL) or TLS credentials; None for PLAINTEXT, faust's default."""
    tls = ssl.create_default_context(cafile=security.ca_location) if security.tls else None
    if security.sasl:
        return faust.SASLCredentials(
            username=security.username, password=security.password, mechanism=security.mechanism, ssl_context=tls
        )
    return faust.SSLCredentials(tls) if tls is not None else None
