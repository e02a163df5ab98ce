"""Strict configuration files (TOML read into pydantic models with ``extra="forbid"``): an error names the
file, the table and the field, and says what to do. The airline registry and the client registry use it."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from jetbridge.errors import ConfigurationError

__all__ = ["checked"]

M = TypeVar("M", bound=BaseModel)


def checked(model: type[M], data: object, *, path: Path, table: str, what: str, guide: str) -> M:
    """``data`` read as ``model``; a ConfigurationError naming every bad field of ``[table]`` otherwise.

    ``what`` names the file for the reader ("airline registry"); ``guide`` is the file whose header
    describes every field.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(model, table, error, guide) for error in exc.errors(include_url=False))
        raise ConfigurationError(f"{what} {path}: {problems}") from None


def _problem(model: type[BaseModel], table: str, error: ErrorDetails, guide: str) -> str:
    """One validation error as a reader of the file wants it: where, what is wrong, what to do."""
    where = f"[{table}]" if table else "the file"
    name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    value, ctx, kind = error.get("input"), error.get("ctx", {}), error["type"]
    if kind == "extra_forbidden":
        known = ", ".join(model.model_fields)
        return (
            f"{where} has an unknown {'field' if table else 'table'} {name!r} (known: {known}); fix its spelling "
            f"or remove it (the header of {guide} describes every field)"
        )
    subject = f"{where} {name}" if name else where
    if kind == "missing":
        return f"{subject}: missing; add it (the header of {guide} describes every field)"
    if kind.endswith("_type"):
        expected = {"frozen_set": "frozenset (a list of strings)", "dict": "a table", "string": "str"}
        typename = kind.removesuffix("_type")
        return f"{subject}: expected {expected.get(typename, typename)}, got {value!r}"
    if kind == "value_error":
        return f"{subject}: {ctx.get('error', error['msg'])}"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        bound = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        limits = " and ".join(f"{bound[k]} {v}" for k, v in ctx.items() if k in bound)
        return f"{subject}: must be {limits}, got {value!r}"
    if kind in {"enum", "literal_error"}:
        return f"{subject}: must be {ctx.get('expected')}, got {value!r}"
    return f"{subject}: {error['msg']}, got {value!r}"
