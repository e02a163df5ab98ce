"""Avro codec in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body.

Schemas are registered at start-up under the topic's value subject (``<topic>-value``,
TopicNameStrategy), so any standard consumer that knows only the registry URL can decode our topics.
Encoding is CPU only (no I/O on the hot path); decoding fetches an unknown writer schema once by id.
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import fastavro
from pydantic import ValidationError

from jetbridge.errors import DecodeError, SchemaError
from schemas.models import Event
from schemas.registry import SchemaRegistryClient

__all__ = ["AVRO_DIR", "AvroCodec", "load_schema", "schema_id_of", "value_subject"]

AVRO_DIR = Path(__file__).resolve().parent / "avro"
_MAGIC = 0
_HEADER = struct.Struct(">bI")

E = TypeVar("E", bound=Event)


@cache
def load_schema(name: str) -> str:
    """The canonical text of a `.avsc` file (what we register)."""
    return json.dumps(json.loads((AVRO_DIR / name).read_text(encoding="utf-8")), separators=(",", ":"))


@cache
def _parsed(schema_text: str) -> Any:
    return fastavro.parse_schema(json.loads(schema_text))


def value_subject(topic: str) -> str:
    return f"{topic}-value"


def schema_id_of(data: bytes) -> int:
    """The registry id in a Confluent-framed message."""
    if len(data) < _HEADER.size:
        raise DecodeError(f"message of {len(data)} bytes is too short for the Confluent wire format")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise DecodeError(f"unknown magic byte {magic} (expected 0, Confluent wire format)")
    return int(schema_id)


class AvroCodec:
    """Encodes models for a topic and decodes framed bytes back into models."""

    def __init__(self, registry: SchemaRegistryClient) -> None:
        self._registry = registry
        self._topic_ids: dict[str, int] = {}
        self._topic_models: dict[str, type[Event]] = {}

    @property
    def registry(self) -> SchemaRegistryClient:
        return self._registry

    async def register(self, topic: str, model: type[Event]) -> int:
        """Register ``model``'s schema as the value schema of ``topic``; idempotent."""
        schema_id = await self._registry.register(value_subject(topic), load_schema(model.SCHEMA))
        self._topic_ids[topic] = schema_id
        self._topic_models[topic] = model
        return schema_id

    def encode(self, topic: str, event: Event) -> bytes:
        schema_id = self._topic_ids.get(topic)
        if schema_id is None:
            raise SchemaError(f"no schema registered for topic {topic}; call register() at start-up")
        buffer = io.BytesIO()
        buffer.write(_HEADER.pack(_MAGIC, schema_id))
        fastavro.schemaless_writer(buffer, _parsed(load_schema(type(event).SCHEMA)), event.model_dump())
        return buffer.getvalue()

    async def decode(self, data: bytes | None, model: type[E]) -> E:
        """Decode framed bytes written with any registered version of ``model``'s schema."""
        if data is None:
            raise DecodeError("message has no value")
        schema_id = schema_id_of(data)
        writer = _parsed(await self._registry.get_by_id(schema_id))
        reader = _parsed(load_schema(model.SCHEMA))
        try:
            record = fastavro.schemaless_reader(io.BytesIO(data[_HEADER.size :]), writer, reader)
        except Exception as exc:  # fastavro raises many types for corrupt bytes
            raise DecodeError(f"bytes do not decode with schema id {schema_id}: {exc!r}") from exc
        try:
            return model.model_validate(record)
        except ValidationError as exc:
            raise DecodeError(f"decoded record breaks the {model.__name__} contract: {exc}") from exc
