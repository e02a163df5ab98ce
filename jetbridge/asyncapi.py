"""The AsyncAPI 3 document of every topic (`docs/asyncapi.json`), generated from the topic declarations.

`jetbridge/topics.py` declares each topic (partitions, retention, cleanup, key, who writes and reads it),
`schemas/avro/` holds its value schema and `jetbridge/kafka.py` names the envelope headers; this module only
arranges them, so the document cannot drift from the code. The per-airline topics become one parameterised
channel each (``jb.airline.{iata}.calls.v1``), the parameter's values taken from the airline registry.

    python -m jetbridge.asyncapi            write docs/asyncapi.json
    python -m jetbridge.asyncapi --check    exit 1 when the committed document is not what would be written

`tools/asyncapi/validate.mjs` parses the document with the AsyncAPI parser and its Avro schema parser
(`tests/unit/test_asyncapi.py` runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from jetbridge.airlines import AirlineRegistry, load_registry
from jetbridge.kafka import (
    HEADER_CLIENT_ID,
    HEADER_CORRELATION_ID,
    HEADER_DEADLINE_MS,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
    HEADER_TRACEPARENT,
    event_headers,
)
from jetbridge.settings import REPO_ROOT, Settings
from jetbridge.topics import (
    AIRLINE_HEALTH,
    AUDIT,
    DLQ,
    DLQ_REPLAYS,
    ORDERS,
    REPLIES,
    TASKS,
    Party,
    TopicSpec,
    airline_calls_topic,
    airline_orders_topic,
    declared_topics,
)
from schemas.codec import AVRO_DIR

__all__ = ["DEFAULT_OUTPUT", "build_document", "check", "main", "render", "write"]

DEFAULT_OUTPUT = REPO_ROOT / "docs" / "asyncapi.json"

AVRO_FORMAT = "application/vnd.apache.avro;version=1.9.0"
KAFKA_BINDING = "0.5.0"
PARAMETER = "iata"

# The per-airline topics: the function that names an airline's topic, called with the parameter, is the address.
_PER_AIRLINE: tuple[Callable[[str], str], ...] = (airline_calls_topic, airline_orders_topic)

_MEANING = {
    HEADER_REQUEST_ID: "One tool call: the key of every event of it, the join key, the id the agent sees in errors.",
    HEADER_CORRELATION_ID: "The conversation the request belongs to (a search is its own: equal to request_id).",
    HEADER_CLIENT_ID: "The agent (MCP client) that asked.",
    HEADER_DEADLINE_MS: "When the answer stops being useful, epoch milliseconds; nobody starts work past it.",
    HEADER_TRACEPARENT: "W3C trace context, one trace per search.",
}
# The envelope as `event_headers` writes it, in its order (a header added there without a meaning here fails).
_ENVELOPE: dict[str, str] = {
    name: _MEANING[name]
    for name, _ in event_headers(request_id="", correlation_id="", client_id="", deadline_ms=0, traceparent="")
}
_REPLY_TO = {HEADER_REPLY_TO: "Return Address: the bridge instance waiting for this reply (filters without decoding)."}
_TASK_ID = "task_id"
# What jetbridge/dlq.py `dead_letter` adds to the failed event's own headers (tests/unit/test_asyncapi.py checks).
DLQ_HEADERS: dict[str, str] = {
    "dlq.original_topic": "The topic the failed event was read from.",
    "dlq.original_partition": "Its partition.",
    "dlq.original_offset": "Its offset.",
    "dlq.stage": "The stage that gave it up.",
    "dlq.error_code": "The stable error code (jetbridge/errors.py).",
    "dlq.error_class": "The error's class name.",
    "dlq.error_message": "The error, scrubbed of secrets and cut to 200 characters.",
    "dlq.retriable": "true or false: whether the error was retriable.",
    "dlq.attempts": "How many times the event was tried.",
    "dlq.first_failed_at": "When the first try failed (ISO 8601).",
    "dlq.failed_at": "When the last try failed (ISO 8601).",
}

_PARTIES: dict[Party, str] = {
    "bridge": "mcp_bridge: the MCP server every agent talks to.",
    "router": "streams: the router (entitlements, route coverage, health, cache, fan-out).",
    "aggregator": "streams: the aggregator (join by request id, deadline, rank).",
    "connectors": "connectors: the per-airline workers, the only ones that reach an airline.",
    "operators": "The operators' `jetbridge` command (dlq, audit).",
    "analytics": "Analytics teams, reading with standard Kafka and schema registry clients.",
    "compliance": "Compliance, reading the audit trail.",
}


def _headers(spec_name: str) -> tuple[dict[str, str], tuple[str, ...], str]:
    """The headers of events on ``spec_name`` (a contract name, no prefix): name → meaning, the required ones,
    and a sentence about them."""
    if spec_name in (AIRLINE_HEALTH, AUDIT, DLQ_REPLAYS):
        return {}, (), "No headers: these records belong to no request."
    if spec_name == TASKS:
        headers = {_TASK_ID: "The task (also the key).", HEADER_CLIENT_ID: "The agent that owns the task."}
        return headers, tuple(headers), "Whose task it is, readable without decoding."
    if spec_name == ORDERS:
        return (
            _ENVELOPE,
            (HEADER_CLIENT_ID, HEADER_TRACEPARENT),
            "The envelope of the order call that made the change; a change the airline made carries only "
            "client_id and a traceparent of its own.",
        )
    if spec_name == DLQ:
        return (
            _ENVELOPE | DLQ_HEADERS,
            tuple(DLQ_HEADERS),
            "The failed event's own headers (the envelope, when it had one) and where and why it failed.",
        )
    if spec_name == REPLIES:
        return _ENVELOPE | _REPLY_TO, (*_ENVELOPE, *_REPLY_TO), "The envelope of the request, and reply_to."
    return _ENVELOPE, tuple(_ENVELOPE), "The envelope every event of a request carries (jetbridge/kafka.py)."


def _camel(words: Sequence[str]) -> str:
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def _channel_id(address: str) -> str:
    """``jb.airline-responses.v1`` → ``airlineResponsesV1``; ``jb.airline.{iata}.calls.v1`` → ``airlineCallsV1``."""
    parts = address.removeprefix("jb.").replace("{" + PARAMETER + "}.", "").split(".")
    return _camel([w for part in parts for w in part.split("-")])


def _channels_of(topics: Sequence[TopicSpec], registry: AirlineRegistry) -> list[tuple[str, TopicSpec, list[str]]]:
    """Each channel's address, the spec that describes it, and the airline codes when it is per-airline."""
    codes = [airline.code for airline in registry]
    per_airline = {name(code): (name("{" + PARAMETER + "}"), code) for name in _PER_AIRLINE for code in codes}
    channels: dict[str, tuple[TopicSpec, list[str]]] = {}
    for spec in topics:
        address, code = per_airline.get(spec.name, (spec.name, None))
        if address not in channels:
            channels[address] = (replace(spec, name=address), [])
        elif replace(spec, name=address) != channels[address][0]:
            raise ValueError(f"{spec.name} is declared unlike the other topics of {address}")
        if code is not None:
            channels[address][1].append(code)
    return [(address, spec, sorted(codes)) for address, (spec, codes) in channels.items()]


def _message(spec: TopicSpec, schema_base: str) -> dict[str, Any]:
    assert spec.model is not None
    avsc = json.loads((AVRO_DIR / spec.model.SCHEMA).read_text(encoding="utf-8"))
    headers, required, about = _headers(spec.name)
    message: dict[str, Any] = {
        "name": spec.model.__name__,
        "title": spec.model.__name__,
        "contentType": "application/vnd.apache.avro",
    }
    if avsc.get("doc"):
        message["summary"] = avsc["doc"]
    if headers:
        message["headers"] = {
            "type": "object",
            "description": about,
            "required": list(required),
            "properties": {name: {"type": "string", "description": text} for name, text in headers.items()},
        }
    message["payload"] = {"schemaFormat": AVRO_FORMAT, "schema": {"$ref": f"{schema_base}/{spec.model.SCHEMA}"}}
    message["bindings"] = {
        "kafka": {
            "key": {"type": "string", "description": f"Plain UTF-8: {spec.key}."},
            # Confluent wire format: a magic byte and the 4-byte schema id before the Avro body,
            # the schema registered under <topic>-value.
            "schemaIdLocation": "payload",
            "schemaIdPayloadEncoding": "confluent",
            "schemaLookupStrategy": "TopicNameStrategy",
            "bindingVersion": KAFKA_BINDING,
        }
    }
    return message


def _channel(address: str, spec: TopicSpec, codes: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "cleanup.policy": spec.cleanup_policy.split(","),
        "retention.ms": spec.retention_ms,
    }
    if spec.segment_ms is not None:
        config["segment.ms"] = spec.segment_ms
    channel: dict[str, Any] = {"address": address, "title": address}
    if codes:
        channel["description"] = "One topic per airline, a bulkhead: a slow airline backs up only its own topic."
        channel["parameters"] = {
            PARAMETER: {
                "description": "The airline's IATA code, one per entry of the airline registry.",
                "enum": codes,
            }
        }
    if spec.model is not None:
        channel["messages"] = {spec.model.__name__: {"$ref": f"#/components/messages/{spec.model.__name__}"}}
    channel["bindings"] = {
        "kafka": {"partitions": spec.partitions, "topicConfiguration": config, "bindingVersion": KAFKA_BINDING}
    }
    return channel


def _operations(channel_id: str, spec: TopicSpec) -> dict[str, dict[str, Any]]:
    if spec.model is None:
        return {}
    ref = {"$ref": f"#/channels/{channel_id}"}
    messages = [{"$ref": f"#/channels/{channel_id}/messages/{spec.model.__name__}"}]
    operations: dict[str, dict[str, Any]] = {}
    for parties, action, verb in ((spec.writers, "send", "writes"), (spec.readers, "receive", "reads")):
        for party in parties:
            operation_id = _camel([party, verb, channel_id[:1].upper() + channel_id[1:]])
            operations[operation_id] = {
                "action": action,
                "channel": ref,
                "summary": f"The {party} {verb} {spec.name}.",
                "tags": [{"name": party}],
                "messages": messages,
            }
    return operations


def build_document(
    topics: Sequence[TopicSpec], registry: AirlineRegistry, schema_base: str = "../schemas/avro"
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``topics``; payloads refer to ``schema_base``/<file>.avsc."""
    fields = Settings.model_fields
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for address, spec, codes in _channels_of(topics, registry):
        channel_id = _channel_id(address)
        if channel_id in channels:
            raise ValueError(f"two channels would be called {channel_id}")
        channels[channel_id] = _channel(address, spec, codes)
        operations |= _operations(channel_id, spec)
        if spec.model is not None:
            message = _message(spec, schema_base)
            if messages.setdefault(spec.model.__name__, message) != message:
                raise ValueError(f"{spec.model.__name__} is the value of two topics with different keys or headers")
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Jetbridge topics",
            "version": "1",
            "description": (
                "Every Kafka topic of Jetbridge, generated by `python -m jetbridge.asyncapi` from "
                "jetbridge/topics.py (do not edit by hand). Values are Avro in the Confluent wire format, "
                "schemas registered under <topic>-value; keys are plain UTF-8 strings. Partition counts are "
                "the defaults (JB_TOPIC_PARTITIONS); JB_TOPIC_PREFIX puts a prefix before every address."
            ),
            "tags": [{"name": party, "description": text} for party, text in _PARTIES.items()],
        },
        "defaultContentType": "application/vnd.apache.avro",
        "servers": {
            "local": {
                "host": str(fields["kafka_bootstrap_servers"].default),
                "protocol": "kafka",
                "description": "The local stack's broker (`jetbridge up`); KAFKA_BOOTSTRAP_SERVERS names another.",
                "bindings": {
                    "kafka": {
                        "schemaRegistryUrl": str(fields["schema_registry_url"].default),
                        "schemaRegistryVendor": "confluent",
                        "bindingVersion": KAFKA_BINDING,
                    }
                },
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _current(output: Path) -> str:
    """The document for the declared topics and the default airline registry, with refs relative to ``output``."""
    base = Path(os.path.relpath(AVRO_DIR, output.resolve().parent)).as_posix()
    return render(build_document(declared_topics(load_registry()), load_registry(), base))


def write(output: Path = DEFAULT_OUTPUT) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(_current(output), encoding="utf-8")


def check(output: Path = DEFAULT_OUTPUT) -> bool:
    """Whether ``output`` is exactly what `write` would write."""
    try:
        return output.read_text(encoding="utf-8") == _current(output)
    except FileNotFoundError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jetbridge.asyncapi", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the document is out of date")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: docs/asyncapi.json")
    args = parser.parse_args(argv)
    shown = os.path.relpath(args.output)
    if args.check:
        if check(args.output):
            print(f"{shown} is up to date")
            return 0
        print(f"{shown} is not what the topic declarations say: run `python -m jetbridge.asyncapi` and commit it")
        return 1
    write(args.output)
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
