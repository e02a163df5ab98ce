"""API keys: the simpler of the bridge's two credentials, for machine clients that hold no OAuth client.

A key is ``jbk_<id>_<secret>``: ``id`` (12 hex digits) names its entry in the keys file, ``secret`` is 32
random bytes (base64url). The file keeps, per key, its client, its scopes and the SHA-256 of the secret,
never the secret itself: whoever reads the file cannot call the bridge with it. (SHA-256, not a slow password
hash: the secret is 256 random bits, so there is nothing to guess, and each request checks one.)
``jetbridge keys create`` prints a key once; ``jetbridge keys revoke`` removes it. The bridge reads the file
again when it changes, so neither needs a restart.

An agent sends its key as a bearer token (``Authorization: Bearer jbk_…``), like a JWT; `ApiKeyVerifier`
answers for those, `mcp_bridge.auth.BridgeVerifier` for both.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mcp.server.auth.provider import AccessToken

from jetbridge.errors import ConfigurationError
from jetbridge.log import get_logger
from mcp_bridge.boundary import is_client_id

__all__ = ["PREFIX", "ApiKey", "ApiKeyVerifier", "KeyFile", "new_key"]

log = get_logger(__name__)

PREFIX = "jbk_"
_KEY = re.compile(r"^jbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_HEADER = """\
# The bridge's API keys (mcp_bridge/api_keys.py): per key, its client, scopes and the SHA-256 of its secret.
# Written by `jetbridge keys create` / `jetbridge keys revoke`; the keys themselves are shown once, never kept.
"""


@dataclass(frozen=True)
class ApiKey:
    """One key's entry: never its secret."""

    key_id: str
    client: str
    scopes: tuple[str, ...]
    sha256: str
    created: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_key(client: str, scopes: Iterable[str]) -> tuple[str, ApiKey]:
    """A fresh key for ``client``: the key to hand over (once) and the entry to store."""
    if not is_client_id(client):
        raise ConfigurationError(f"{client!r} is not a client id (1-64 letters, digits, - and _)")
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    entry = ApiKey(key_id, client, tuple(scopes), _digest(secret), created)
    return f"{PREFIX}{key_id}_{secret}", entry


class KeyFile:
    """The keys file: read strictly (a damaged file stops the bridge, naming it), written atomically (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, ApiKey]:
        if not self.path.exists():
            return {}
        try:
            document = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"{self.path}: not a keys file ({exc})") from exc
        keys: dict[str, ApiKey] = {}
        for key_id, entry in document.get("keys", {}).items():
            try:
                keys[key_id] = ApiKey(
                    key_id=key_id,
                    client=str(entry["client"]),
                    scopes=tuple(str(s) for s in entry["scopes"]),
                    sha256=str(entry["sha256"]),
                    created=str(entry.get("created", "")),
                )
            except (KeyError, TypeError) as exc:
                raise ConfigurationError(f"{self.path}: [keys.{key_id}] lacks {exc}") from exc
        return keys

    def write(self, keys: Iterable[ApiKey]) -> None:
        lines = [_HEADER]
        for key in sorted(keys, key=lambda k: k.created):
            scopes = ", ".join(f'"{s}"' for s in key.scopes)
            lines.append(
                f'\n[keys.{key.key_id}]\nclient = "{key.client}"\nscopes = [{scopes}]\n'
                f'sha256 = "{key.sha256}"\ncreated = "{key.created}"\n'
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".api-keys.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("".join(lines))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def add(self, key: ApiKey) -> None:
        self.write([*self.read().values(), key])

    def revoke(self, key_id: str) -> ApiKey | None:
        keys = self.read()
        gone = keys.pop(key_id.removeprefix(PREFIX).split("_")[0], None)
        if gone is not None:
            self.write(keys.values())
        return gone


class ApiKeyVerifier:
    """Checks ``jbk_`` bearer tokens against the keys file, re-read when its modification time changes."""

    def __init__(self, keys: KeyFile, *, resource: str) -> None:
        self._file = keys
        self.resource = resource
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the version held
        self._keys: dict[str, ApiKey] = {}

    @staticmethod
    def handles(token: str) -> bool:
        return token.startswith(PREFIX)

    def _current(self) -> dict[str, ApiKey]:
        try:
            stat = self._file.path.stat()
        except FileNotFoundError:
            self._seen, self._keys = None, {}
            return self._keys
        version = (stat.st_mtime_ns, stat.st_size)
        if version != self._seen:
            try:
                self._keys = self._file.read()
            except ConfigurationError as exc:
                # Keep the keys held: a half-edited file must not lock every machine client out.
                log.error("api keys file not read: keeping the keys held", error=str(exc))
            self._seen = version
        return self._keys

    async def verify_token(self, token: str) -> AccessToken | None:
        match = _KEY.match(token)
        if match is None:
            log.info("bearer token refused", reason="not an API key of this bridge")
            return None
        key_id, secret = match.groups()
        key = self._current().get(key_id)
        # compare_digest on the digest: the time taken says nothing of how much of it matched.
        if key is None or not hmac.compare_digest(key.sha256, _digest(secret)):
            log.info("bearer token refused", reason="unknown or revoked API key", key_id=key_id)
            return None
        return AccessToken(
            token=token, client_id=key.client, scopes=list(key.scopes), expires_at=None, resource=self.resource
        )
