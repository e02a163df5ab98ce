"""A development authorization server: the issuer of the bridge's bearer tokens on a developer's machine.

A real OAuth 2.1 authorization server, small on purpose: one RSA key pair (made at first start, kept in
``$JB_HOME/auth/signing-key.pem``, mode 0600), its public half at ``/.well-known/jwks.json``, RFC 8414 metadata at
``/.well-known/oauth-authorization-server``, and ``POST /token`` with the client-credentials grant for the
clients listed in ``$JB_HOME/auth/clients.toml`` (id, scrypt hash of the secret, scopes allowed). Tokens are
RFC 9068 JWTs: ``iss`` this issuer, ``aud`` the bridge's resource URI (the RFC 8707 ``resource`` the client
asks for must be it), ``client_id`` and ``sub`` the client, ``scope``, a lifetime of ``ttl_s``.

    python -m infra.auth.dev_issuer                          serve at JB_AUTH_ISSUER (http://127.0.0.1:9400)
    python -m infra.auth.dev_issuer add-client ID [--scopes "offers:read"]   register a client, print its secret

It is not a production issuer: no authorization-code flow, no revocation, one key. Point ``JB_AUTH_ISSUER`` at
the organisation's own (Keycloak, Entra ID, Auth0, …) in production.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jetbridge.log import configure_logging, get_logger
from jetbridge.settings import Settings, get_settings
from mcp_bridge.auth import OFFERS_READ, SCOPES, resource_uri
from mcp_bridge.boundary import is_client_id

__all__ = [
    "SigningKey",
    "add_client",
    "auth_dir",
    "dev_token",
    "hash_secret",
    "issuer_app",
    "load_clients",
    "load_or_create_key",
    "mint",
    "secret_matches",
]

log = get_logger(__name__)

KEY_FILE = "signing-key.pem"
CLIENTS_FILE = "clients.toml"
SCOPES_SUPPORTED = SCOPES
MAX_TTL_S = 24 * 3600
# scrypt's interactive parameters (RFC 7914): about 50 ms a check, 16 MB of memory.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def auth_dir(home: Path) -> Path:
    """Where the development issuer keeps its key and its clients: ``$JB_HOME/auth``."""
    return home / "auth"


@dataclass(frozen=True)
class SigningKey:
    """The issuer's RSA key and its key id (the RFC 7638 thumbprint of its public half)."""

    private: rsa.RSAPrivateKey

    @property
    def public_jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
        thumbprint = hashlib.sha256(json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()).digest()
        return jwk | {"kid": _b64(thumbprint), "use": "sig", "alg": "RS256"}

    @property
    def kid(self) -> str:
        return self.public_jwk["kid"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def load_or_create_key(directory: Path) -> SigningKey:
    """The key in ``directory``, made (RSA 2048, file mode 0600) when there is none yet."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / KEY_FILE
    if not path.exists():
        made = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = made.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Written whole to a private temporary file (mkstemp: 0600), then linked into place: a reader never
        # sees half a key, and of two processes starting at once the first link wins and both use its key.
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".key-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    if path.stat().st_mode & 0o077:
        log.warning("signing key readable by others: made private", path=str(path))
        path.chmod(0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} holds no RSA private key")
    return SigningKey(key)


def mint(key: SigningKey, *, issuer: str, audience: str, client_id: str, scopes: list[str], ttl_s: int = 3600) -> str:
    """An RFC 9068 access token for ``client_id``, signed with ``key``."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": client_id,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid, "typ": "at+jwt"})


def dev_token(settings: Settings, client_id: str, scopes: list[str] | None = None, *, ttl_s: int = 3600) -> str:
    """A token for ``client_id`` from this machine's development issuer (its key in ``$JB_HOME/auth``), for the
    bridge of ``settings``: what `jetbridge demo`, the benchmark and the tests call the bridge with."""
    key = load_or_create_key(auth_dir(settings.home))
    granted = list(SCOPES_SUPPORTED) if scopes is None else scopes
    return mint(
        key,
        issuer=settings.auth_issuer,
        audience=resource_uri(settings),
        client_id=client_id,
        scopes=granted,
        ttl_s=ttl_s,
    )


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${_b64(salt)}${_b64(digest)}"


def secret_matches(secret: str, hashed: str) -> bool:
    try:
        scheme, salt, digest = hashed.split("$")
        expected = base64.urlsafe_b64decode(digest + "==")
        salt_bytes = base64.urlsafe_b64decode(salt + "==")
    except (ValueError, binascii.Error):
        return False
    if scheme != "scrypt":
        return False
    actual = hashlib.scrypt(secret.encode(), salt=salt_bytes, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    secret_hash: str
    scopes: tuple[str, ...]


def load_clients(path: Path) -> dict[str, RegisteredClient]:
    """The clients file: ``[clients.<id>]`` with ``secret_hash`` and ``scopes``; no file, no clients."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    clients: dict[str, RegisteredClient] = {}
    for client_id, entry in document.get("clients", {}).items():
        if not is_client_id(client_id) or not isinstance(entry, dict):
            raise ValueError(f"{path}: [clients.{client_id}] is not a client id with a table")
        scopes = entry.get("scopes", list(SCOPES_SUPPORTED))
        if not isinstance(entry.get("secret_hash"), str) or not all(s in SCOPES_SUPPORTED for s in scopes):
            raise ValueError(f"{path}: [clients.{client_id}] needs secret_hash and scopes among {SCOPES_SUPPORTED}")
        clients[client_id] = RegisteredClient(client_id, entry["secret_hash"], tuple(scopes))
    return clients


def add_client(path: Path, client_id: str, scopes: list[str]) -> str:
    """Register (or give a new secret to) ``client_id`` in the clients file; returns its secret, shown once."""
    if not is_client_id(client_id):
        raise ValueError(f"{client_id!r} is not a client id (1-64 letters, digits, - and _)")
    unknown = [s for s in scopes if s not in SCOPES_SUPPORTED]
    if unknown:
        raise ValueError(f"unknown scopes {unknown}: the bridge knows {list(SCOPES_SUPPORTED)}")
    clients = load_clients(path)
    secret = secrets.token_urlsafe(32)
    clients[client_id] = RegisteredClient(client_id, hash_secret(secret), tuple(scopes))
    lines = ["# Clients of the development issuer (infra/auth/dev_issuer.py): secrets are stored as scrypt hashes.", ""]
    for c in clients.values():
        listed = json.dumps(list(c.scopes))
        lines += [f"[clients.{c.client_id}]", f'secret_hash = "{c.secret_hash}"', f"scopes = {listed}", ""]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".clients-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines))
    os.replace(temporary, path)
    return secret


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An RFC 6749 §5.2 error."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 §2.3.1: each part form-urlencoded) or client_secret_post, not both."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        if "client_secret" in form:
            return None
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret)
    if "client_id" in form and "client_secret" in form:
        return form["client_id"], form["client_secret"]
    return None


def issuer_app(*, issuer: str, audience: str, key: SigningKey, clients_file: Path, ttl_s: int = 3600) -> Starlette:
    """The issuer's HTTP application; the clients file is read at each token request, so additions count at once."""
    issuer = issuer.rstrip("/")
    metadata = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        # Not used by the client-credentials grant; advertised because the MCP SDK's client reads metadata
        # with a model that requires it. It answers unsupported_response_type.
        "authorization_endpoint": f"{issuer}/authorize",
        "response_types_supported": [],
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": list(SCOPES_SUPPORTED),
    }
    audiences = {audience.rstrip("/"), audience.rstrip("/") + "/"}

    async def authorization_server_metadata(_: Request) -> Response:
        return JSONResponse(metadata, headers={"Cache-Control": "public, max-age=3600"})

    async def jwks(_: Request) -> Response:
        return JSONResponse({"keys": [key.public_jwk]}, headers={"Cache-Control": "public, max-age=300"})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "issuer": issuer, "kid": key.kid})

    async def authorize(_: Request) -> Response:
        return _error(400, "unsupported_response_type", "this issuer only has the client_credentials grant")

    async def token(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=20) as raw:
            form = {k: v for k, v in raw.items() if isinstance(v, str)}
            resources = [r for r in raw.getlist("resource") if isinstance(r, str)]
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
        credentials = _client_credentials(request, form)
        if credentials is None:
            return _error(401, "invalid_client", "authenticate with client_secret_basic or client_secret_post")
        client = load_clients(clients_file).get(credentials[0])
        if client is None or not secret_matches(credentials[1], client.secret_hash):
            log.info("token refused: unknown client or wrong secret", client=credentials[0][:64])
            challenge = {"WWW-Authenticate": 'Basic realm="jetbridge-dev-issuer"'}
            return _error(401, "invalid_client", "unknown client or wrong secret", challenge)
        asked = form["scope"].split() if form.get("scope") else list(client.scopes)
        # RFC 6749 §3.3: the server may grant less than asked (clients ask for every scope the resource's
        # metadata lists); the response's scope says what was granted. Nothing of it: invalid_scope.
        requested = [s for s in asked if s in client.scopes]
        if not requested:
            return _error(400, "invalid_scope", f"client {client.client_id} may have {' '.join(client.scopes)}")
        if any(r not in audiences for r in resources):
            return _error(400, "invalid_target", f"this issuer issues tokens for {audience} only")
        access_token = mint(
            key, issuer=issuer, audience=audience, client_id=client.client_id, scopes=requested, ttl_s=ttl_s
        )
        log.info("token issued", client=client.client_id, scope=" ".join(requested), ttl_s=ttl_s)
        body = {"access_token": access_token, "token_type": "Bearer", "expires_in": ttl_s, "scope": " ".join(requested)}
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    return Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", authorization_server_metadata, methods=["GET"]),
            Route("/.well-known/jwks.json", jwks, methods=["GET"]),
            Route("/authorize", authorize, methods=["GET", "POST"]),
            Route("/token", token, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def _serve(settings: Settings) -> None:
    directory = auth_dir(settings.home)
    key = load_or_create_key(directory)
    app = issuer_app(
        issuer=settings.auth_issuer,
        audience=resource_uri(settings),
        key=key,
        clients_file=directory / CLIENTS_FILE,
    )
    where = urlsplit(settings.auth_issuer)
    log.info("development issuer listening", issuer=settings.auth_issuer, kid=key.kid, home=str(directory))
    uvicorn.run(app, host=where.hostname or "127.0.0.1", port=where.port or 80, log_config=None, log_level="warning")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.auth.dev_issuer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    p_add = sub.add_parser("add-client", help="register a client (or give it a new secret) and print its secret")
    p_add.add_argument("client_id")
    p_add.add_argument("--scopes", default=OFFERS_READ, help='space-separated, default "offers:read"')
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="dev-issuer")
    if args.command == "add-client":
        path = auth_dir(settings.home) / CLIENTS_FILE
        secret = add_client(path, args.client_id, args.scopes.split())
        print(secret)
        print(f"client {args.client_id} registered in {path}; its secret (above) is not stored", file=sys.stderr)
        return 0
    _serve(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
