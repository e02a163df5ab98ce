"""LOCAL STAND-IN for a schema registry: the smallest server that speaks the Confluent Schema Registry
REST API subset Jetbridge and standard Avro consumers use.

Why it exists: no real registry can be run on these machines from the package registries they reach
(see infra/registry/README.md for what was tried). Jetbridge's code does not know it is talking to this:
point ``SCHEMA_REGISTRY_URL`` at Confluent Schema Registry, Apicurio (``.../apis/ccompat/v7``) or
Karapace and nothing else changes.

Implemented (Confluent API, Avro only):
    POST /subjects/{subject}/versions                       register (same schema -> same id)
    POST /subjects/{subject}                                look up a schema under a subject
    GET  /schemas/ids/{id}                                  schema by global id
    GET  /schemas/ids/{id}/versions                         subject-versions using an id
    GET  /subjects, /subjects/{subject}/versions            listings
    GET  /subjects/{subject}/versions/{version|latest}      one version
    POST /compatibility/subjects/{subject}/versions/latest  compatibility check
    GET|PUT /config, GET|PUT /config/{subject}               compatibility level
Compatibility levels: NONE, BACKWARD (default), FORWARD, FULL (and their _TRANSITIVE forms, checked
against every version), judged by schemas/compat.py, the rules `jetbridge schemas check` applies too.
State is a JSON file, rewritten atomically on each change.

    python -m infra.registry.local_registry --port 8081 --data .jetbridge/registry/state.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.compat import LEVELS, is_backward_compatible, is_compatible

__all__ = ["RegistryState", "build_app", "is_backward_compatible"]

_CT = "application/vnd.schemaregistry.v1+json"


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status, media_type=_CT)


def _ok(body: Any) -> JSONResponse:
    return JSONResponse(body, media_type=_CT)


def _canonical(schema: str) -> str:
    return json.dumps(json.loads(schema), separators=(",", ":"), sort_keys=True)


# ---- state ----


class RegistryState:
    """Schemas by id and subjects' version lists, persisted to one JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.config: dict[str, str] = {"": "BACKWARD"}
        self.lock = asyncio.Lock()
        if path is not None and path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            self.schemas = {int(k): v for k, v in data["schemas"].items()}
            self.subjects = data["subjects"]
            self.config = data["config"]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"schemas": self.schemas, "subjects": self.subjects, "config": self.config})
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.replace(tmp, self.path)

    def id_for(self, schema: str) -> int | None:
        canonical = _canonical(schema)
        for schema_id, text in self.schemas.items():
            if _canonical(text) == canonical:
                return schema_id
        return None

    def level(self, subject: str) -> str:
        return self.config.get(subject, self.config[""])


def build_app(state: RegistryState) -> Starlette:
    async def body_schema(request: Request) -> str | JSONResponse:
        try:
            body = json.loads(await request.body())
            schema = body["schema"]
            if body.get("schemaType", "AVRO") != "AVRO":
                return _error(422, 42201, "only AVRO schemas are supported by the local stand-in")
            json.loads(schema)
            return str(schema)
        except (ValueError, KeyError, TypeError):
            return _error(422, 42201, "Invalid schema")

    def version_body(subject: str, version: int, schema_id: int) -> dict[str, Any]:
        return {"subject": subject, "version": version, "id": schema_id, "schema": state.schemas[schema_id]}

    async def register(request: Request) -> JSONResponse:
        subject = request.path_params["subject"]
        schema = await body_schema(request)
        if isinstance(schema, JSONResponse):
            return schema
        async with state.lock:
            existing = state.id_for(schema)
            versions = state.subjects.setdefault(subject, [])
            if existing is not None and existing in versions:
                return _ok({"id": existing})
            if not is_compatible(state.level(subject), schema, [state.schemas[i] for i in versions]):
                return _error(
                    409,
                    409,
                    f"Schema being registered is incompatible with an earlier schema for subject {subject}",
                )
            schema_id = existing if existing is not None else max(state.schemas, default=0) + 1
            state.schemas[schema_id] = schema
            versions.append(schema_id)
            state.save()
            return _ok({"id": schema_id})

    async def lookup(request: Request) -> JSONResponse:
        subject = request.path_params["subject"]
        schema = await body_schema(request)
        if isinstance(schema, JSONResponse):
            return schema
        versions = state.subjects.get(subject)
        if versions is None:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        schema_id = state.id_for(schema)
        if schema_id is None or schema_id not in versions:
            return _error(404, 40403, "Schema not found")
        return _ok(version_body(subject, versions.index(schema_id) + 1, schema_id))

    async def by_id(request: Request) -> JSONResponse:
        schema_id = int(request.path_params["id"])
        if schema_id not in state.schemas:
            return _error(404, 40403, "Schema not found")
        return _ok({"schema": state.schemas[schema_id]})

    async def id_versions(request: Request) -> JSONResponse:
        schema_id = int(request.path_params["id"])
        if schema_id not in state.schemas:
            return _error(404, 40403, "Schema not found")
        return _ok(
            [{"subject": s, "version": v.index(schema_id) + 1} for s, v in state.subjects.items() if schema_id in v]
        )

    async def subjects(_: Request) -> JSONResponse:
        return _ok(sorted(state.subjects))

    async def versions(request: Request) -> JSONResponse:
        subject = request.path_params["subject"]
        if subject not in state.subjects:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        return _ok(list(range(1, len(state.subjects[subject]) + 1)))

    async def version(request: Request) -> JSONResponse:
        subject, wanted = request.path_params["subject"], request.path_params["version"]
        ids = state.subjects.get(subject)
        if not ids:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        number = len(ids) if wanted in ("latest", "-1") else int(wanted) if wanted.isdigit() else 0
        if not 1 <= number <= len(ids):
            return _error(404, 40402, f"Version {wanted} not found.")
        return _ok(version_body(subject, number, ids[number - 1]))

    async def compatibility(request: Request) -> JSONResponse:
        subject = request.path_params["subject"]
        schema = await body_schema(request)
        if isinstance(schema, JSONResponse):
            return schema
        if subject not in state.subjects:
            return _error(404, 40401, f"Subject '{subject}' not found.")
        old = [state.schemas[i] for i in state.subjects[subject]]
        return _ok({"is_compatible": is_compatible(state.level(subject), schema, old)})

    async def config(request: Request) -> JSONResponse:
        subject = request.path_params.get("subject", "")
        if request.method == "PUT":
            level = json.loads(await request.body()).get("compatibility", "")
            if level not in LEVELS:
                return _error(422, 42203, f"Invalid compatibility level {level!r}")
            async with state.lock:
                state.config[subject] = level
                state.save()
            return _ok({"compatibility": level})
        return _ok({"compatibilityLevel": state.level(subject)})

    async def health(_: Request) -> JSONResponse:
        return _ok({"status": "ok", "implementation": "jetbridge local stand-in", "schemas": len(state.schemas)})

    return Starlette(
        routes=[
            Route("/subjects/{subject}/versions", register, methods=["POST"]),
            Route("/subjects/{subject}/versions", versions, methods=["GET"]),
            Route("/subjects/{subject}/versions/{version}", version, methods=["GET"]),
            Route("/subjects/{subject}", lookup, methods=["POST"]),
            Route("/subjects", subjects, methods=["GET"]),
            Route("/schemas/ids/{id:int}", by_id, methods=["GET"]),
            Route("/schemas/ids/{id:int}/versions", id_versions, methods=["GET"]),
            Route("/compatibility/subjects/{subject}/versions/{version}", compatibility, methods=["POST"]),
            Route("/config", config, methods=["GET", "PUT"]),
            Route("/config/{subject}", config, methods=["GET", "PUT"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.registry.local_registry", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--data", type=Path, help="state file (in memory if omitted)")
    args = parser.parse_args()
    uvicorn.run(build_app(RegistryState(args.data)), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
