"""An in-memory stand-in for the Confluent registry API, served through httpx.MockTransport.

For unit tests only (no network); integration tests use the real registry the stack starts.
"""

from __future__ import annotations

import json

import httpx


class RegistryDouble:
    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.startswith("/subjects/") and path.endswith("/versions"):
            subject = path.split("/")[2]
            schema = json.loads(request.content)["schema"]
            known = {text: sid for sid, text in self.schemas.items()}
            schema_id = known.get(schema, len(self.schemas) + 1)
            self.schemas[schema_id] = schema
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return httpx.Response(200, json={"id": schema_id})
        if request.method == "GET" and path.startswith("/schemas/ids/"):
            schema_id = int(path.rsplit("/", 1)[1])
            if schema_id not in self.schemas:
                return httpx.Response(404, json={"error_code": 40403, "message": "Schema not found"})
            return httpx.Response(200, json={"schema": self.schemas[schema_id]})
        return httpx.Response(404, json={"error_code": 404, "message": "not in the double"})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler), base_url="http://registry.test")
