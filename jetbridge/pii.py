"""Passenger personal data, sealed for the processes that need it (AES-256-GCM).

An order call carries its passengers and contact from the bridge to the airline's connector over Kafka. Sealed,
they are bytes to everyone else: a topic's readers (analytics, `kcat`), the dead-letter topic that keeps a failed
call byte for byte, an operator's replay tool. Only a process holding the key (the bridge that sealed them, the
connectors that call the airline) opens them, and neither logs what it opened.

A sealed value is ``b"JBP1" + key id (8 bytes) + nonce (12 bytes) + ciphertext and tag``; the key id is the first
8 bytes of the key's SHA-256, so a value sealed under another key is refused as such, never garbled. The
request id is bound in as associated data: a sealed value moved onto another call does not open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jetbridge.errors import ConfigurationError, DecodeError
from jetbridge.settings import Settings

__all__ = ["PiiSeal", "load_seal"]

_MAGIC = b"JBP1"
_KEY_ID_LEN = 8
_NONCE_LEN = 12


class PiiSeal:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigurationError(f"the passenger-data key must be 32 bytes, not {len(key)} (JB_PII_KEY)")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).digest()[:_KEY_ID_LEN]
        # A second key from the same secret, for fingerprints (HMAC), never for sealing.
        self._mac_key = hmac.new(key, b"jetbridge fingerprint v1", hashlib.sha256).digest()

    def fingerprint(self, data: bytes) -> str:
        """A keyed hash of personal data (HMAC-SHA256, hex): the same data gives the same value in every process
        holding the key, and without the key nobody can test a guess (a name, a date of birth) against it."""
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()

    def seal(self, plaintext: bytes, *, bound_to: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LEN)
        return _MAGIC + self.key_id + nonce + self._aead.encrypt(nonce, plaintext, bound_to.encode())

    def open(self, sealed: bytes, *, bound_to: str) -> bytes:
        header = len(_MAGIC) + _KEY_ID_LEN + _NONCE_LEN
        if len(sealed) <= header or not sealed.startswith(_MAGIC):
            raise DecodeError("sealed passenger data is not in the JBP1 form")
        key_id = sealed[len(_MAGIC) : len(_MAGIC) + _KEY_ID_LEN]
        if key_id != self.key_id:
            raise DecodeError(
                f"sealed passenger data is under key {key_id.hex()}, this process holds {self.key_id.hex()} "
                "(JB_PII_KEY differs between the bridge and the connectors)"
            )
        nonce = sealed[len(_MAGIC) + _KEY_ID_LEN : header]
        try:
            return self._aead.decrypt(nonce, sealed[header:], bound_to.encode())
        except InvalidTag:
            raise DecodeError("sealed passenger data does not open: altered, or moved from another call") from None


def _decode_key(text: str, source: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError:
        raise ConfigurationError(f"{source} is not url-safe base64 of 32 bytes") from None


def load_seal(settings: Settings) -> PiiSeal:
    """The process's seal: JB_PII_KEY, else $JB_HOME/secrets/pii.key (made now, 0600, when missing)."""
    if settings.pii_key is not None:
        return PiiSeal(_decode_key(settings.pii_key.get_secret_value(), "JB_PII_KEY"))
    path: Path = settings.pii_key_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this machine made it first: use theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write(text + "\n")
    return PiiSeal(_decode_key(path.read_text(), str(path)))
