"""An async client for the Confluent Schema Registry REST API (the subset Jetbridge uses).

Works unchanged against Confluent Schema Registry, Apicurio's ccompat API and Karapace: the base URL is
all that differs (for Apicurio it ends in ``/apis/ccompat/v7``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from jetbridge.errors import DecodeError, SchemaRegistryError

__all__ = ["RegisteredSchema", "SchemaRegistryClient"]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    subject: str
    id: int
    version: int
    schema: str


class SchemaRegistryClient:
    """Register, look up and check schemas. Owns no HTTP client: it is given one."""

    def __init__(self, base_url: str, http: httpx.AsyncClient, *, auth: tuple[str, str] | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._http = http
        self._auth = auth
        self._by_id: dict[int, str] = {}

    @property
    def base_url(self) -> str:
        return self._base

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = await self._http.request(
                method,
                f"{self._base}{path}",
                content=None if body is None else json.dumps(body),
                headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE},
                auth=self._auth,
            )
        except httpx.HTTPError as exc:
            raise SchemaRegistryError(f"registry at {self._base} unreachable: {exc!r}") from exc
        if response.status_code == 404 and path.startswith("/schemas/ids/"):
            # An id nobody registered: the message carrying it is poison, not a registry outage.
            raise DecodeError(f"schema id in {path} is unknown to the registry")
        if response.status_code >= 400:
            raise SchemaRegistryError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    async def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` (idempotent: the same schema gets the same id)."""
        result = await self._call("POST", f"/subjects/{subject}/versions", {"schema": schema, "schemaType": "AVRO"})
        schema_id = int(result["id"])
        self._by_id[schema_id] = schema
        return schema_id

    async def get_by_id(self, schema_id: int) -> str:
        """The schema text with this id (cached: ids are immutable)."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        result = await self._call("GET", f"/schemas/ids/{schema_id}")
        text = str(result["schema"])
        self._by_id[schema_id] = text
        return text

    async def get_latest(self, subject: str) -> RegisteredSchema:
        result = await self._call("GET", f"/subjects/{subject}/versions/latest")
        return RegisteredSchema(
            subject=subject,
            id=int(result["id"]),
            version=int(result["version"]),
            schema=str(result["schema"]),
        )

    async def subjects(self) -> list[str]:
        return [str(s) for s in await self._call("GET", "/subjects")]

    async def versions(self, subject: str) -> list[int]:
        return [int(v) for v in await self._call("GET", f"/subjects/{subject}/versions")]

    async def get_version(self, subject: str, version: int) -> RegisteredSchema:
        result = await self._call("GET", f"/subjects/{subject}/versions/{version}")
        return RegisteredSchema(subject=subject, id=int(result["id"]), version=version, schema=str(result["schema"]))

    async def set_compatibility(self, subject: str, level: str) -> None:
        """Set ``subject``'s compatibility level (NONE, BACKWARD, FORWARD, FULL, or one of them ``_TRANSITIVE``)."""
        await self._call("PUT", f"/config/{subject}", {"compatibility": level})

    async def is_compatible(self, subject: str, schema: str) -> bool:
        """Whether ``schema`` may be registered next under ``subject`` by the subject's compatibility rule."""
        result = await self._call(
            "POST",
            f"/compatibility/subjects/{subject}/versions/latest",
            {"schema": schema, "schemaType": "AVRO"},
        )
        return bool(result["is_compatible"])
