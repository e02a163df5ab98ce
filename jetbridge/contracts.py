"""Contract governance for the topics: each value subject's compatibility level, set in the registry, and the
check that every `.avsc` may follow what came before it (`jetbridge schemas check`).

A schema file is compared with the version of it on a git base (``main`` by default: works offline) and with the
versions registered under its topics' subjects (when the registry answers), by the level its topics declare
(`jetbridge.topics.TopicSpec.compatibility`), with the rules of `schemas.compat`. A file with no earlier version (a
new contract, such as the schema of a new ``.v2`` topic) has nothing to break.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import fastavro

from jetbridge.errors import SchemaError, SchemaRegistryError
from jetbridge.topics import TopicSpec
from schemas.codec import value_subject
from schemas.compat import BACKWARD, breaking_changes
from schemas.registry import SchemaRegistryClient

__all__ = ["Finding", "SchemaReport", "apply_compatibility", "check_schemas", "levels_by_file"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A breaking change: in which schema file and field, against which earlier version, under which level, why."""

    schema: str
    field: str
    against: str
    level: str
    reason: str


@dataclass(slots=True)
class SchemaReport:
    base: str
    checked: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # no version on the git base
    registry_versions: int = 0  # registered versions compared
    registry_note: str = ""  # why the registry was not compared, when it was not
    findings: list[Finding] = field(default_factory=list)


def levels_by_file(specs: Iterable[TopicSpec]) -> dict[str, dict[str, str]]:
    """For each `.avsc` file the declared topics use: their value subjects and each one's compatibility level."""
    levels: dict[str, dict[str, str]] = {}
    for spec in specs:
        if spec.model is not None:
            levels.setdefault(spec.model.SCHEMA, {})[value_subject(spec.name)] = spec.compatibility
    return levels


async def apply_compatibility(registry: SchemaRegistryClient, specs: Iterable[TopicSpec]) -> dict[str, str]:
    """Set every declared topic's value subject to its compatibility level; the levels set, by subject."""
    applied: dict[str, str] = {}
    for subjects in levels_by_file(specs).values():
        for subject, level in subjects.items():
            await registry.set_compatibility(subject, level)
            applied[subject] = level
    return applied


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", str(folder), *args],  # noqa: S607 - git from PATH, as a person runs it
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SchemaError(f"git could not be run in {folder}: {exc}") from exc


def _base_versions(folder: Path, base: str) -> dict[str, str]:
    """The `.avsc` files of ``folder`` as they are on git revision ``base``, by file name."""
    prefix = _git(folder, "rev-parse", "--show-prefix")
    if prefix.returncode != 0:
        raise SchemaError(f"{folder} is not in a git work tree, so there is no base to compare with: {prefix.stderr}")
    if _git(folder, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode != 0:
        raise SchemaError(f"git knows no revision {base!r} in {folder}: fetch it, or name another with --base REV")
    where = prefix.stdout.strip()
    listed = _git(folder, "ls-tree", "--name-only", base, "--", ".")  # names relative to the folder
    texts: dict[str, str] = {}
    for name in listed.stdout.splitlines():
        if name.endswith(".avsc"):
            texts[name] = _git(folder, "show", f"{base}:{where}{name}").stdout
    return texts


def _read(folder: Path, base: str) -> tuple[dict[str, str], dict[str, str]]:
    """The `.avsc` files on the git base and in ``folder`` now, by file name."""
    files = {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.avsc"))}
    return _base_versions(folder, base), files


def _invalid(text: str) -> str | None:
    """Why ``text`` is not an Avro schema, if it is not."""
    try:
        fastavro.parse_schema(json.loads(text))
    except Exception as exc:  # noqa: BLE001 - json and fastavro raise many kinds; each is the reason to show
        return f"not a valid Avro schema: {exc}"
    return None


async def _registered(registry: SchemaRegistryClient, subject: str, level: str) -> list[tuple[int, str]]:
    """The versions ``level`` compares with: all for a transitive level, else the latest; (number, text) each."""
    numbers = await registry.versions(subject)
    if not level.endswith("_TRANSITIVE"):
        numbers = numbers[-1:]
    return [(n, (await registry.get_version(subject, n)).schema) for n in numbers]


async def check_schemas(
    folder: Path, specs: Iterable[TopicSpec], *, base: str, registry: SchemaRegistryClient | None
) -> SchemaReport:
    """Compare every `.avsc` in ``folder`` with its version on git ``base`` and (``registry`` given) the registry's."""
    report = SchemaReport(base=base)
    levels = levels_by_file(specs)
    on_base, files = await asyncio.to_thread(_read, folder, base)
    subjects: set[str] = set()
    if registry is None:
        report.registry_note = "offline: the registry was not asked"
    else:
        try:
            subjects = set(await registry.subjects())
        except SchemaRegistryError as exc:
            registry = None
            report.registry_note = f"compared with git only: {exc.message}"
    for name, text in files.items():
        report.checked.append(name)
        broken = _invalid(text)
        if broken is not None:
            report.findings.append(Finding(name, "", "itself", "-", broken))
            continue
        declared = levels.get(name, {})
        old = on_base.get(name)
        if old is None:
            report.new.append(name)
        else:
            # Every level its topics declare (one, in practice): a single base version, so transitive or not alike.
            for level in sorted(set(declared.values())) or [BACKWARD]:
                for problem in breaking_changes(level, text, [old]):
                    report.findings.append(Finding(name, problem.field, f"git {base}", level, problem.reason))
        if registry is None:
            continue
        seen: set[tuple[str, str]] = set()  # one row per field and reason, not one per airline's topic
        for subject, level in sorted(declared.items()):
            if subject not in subjects:
                continue
            for number, registered in await _registered(registry, subject, level):
                report.registry_versions += 1
                for problem in breaking_changes(level.removesuffix("_TRANSITIVE"), text, [registered]):
                    if (problem.field, problem.reason) not in seen:
                        seen.add((problem.field, problem.reason))
                        against = f"registry {subject} v{number}"
                        report.findings.append(Finding(name, problem.field, against, level, problem.reason))
    return report
