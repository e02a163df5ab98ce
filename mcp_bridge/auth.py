"""Who may call the bridge: an OAuth 2.1 resource server, as the MCP authorization specification has it.

With ``JB_AUTH=jwt`` every request to /mcp carries a bearer JWT. The MCP SDK does the HTTP part: its
``BearerAuthBackend`` reads the ``Authorization`` header, its ``RequireAuthMiddleware`` answers 401 with
``WWW-Authenticate: Bearer … resource_metadata="<url>"`` (no or a bad token) or 403 ``insufficient_scope``,
and it serves the RFC 9728 metadata at ``/.well-known/oauth-protected-resource/mcp``. What it leaves to
the server is here: `JwtVerifier` checks a token's signature against the issuer's keys, its issuer, its
audience (the bridge's resource URI, RFC 8707), its expiry and scopes, and names its client; `JwksCache`
holds the issuer's keys, fetching them again for a key id it does not know (key rotation), never more
often than ``min_refresh_s`` (a flood of made-up key ids costs the issuer one request per period).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.shared.auth import ProtectedResourceMetadata

from jetbridge.http import build_http_client
from jetbridge.log import get_logger
from jetbridge.settings import Settings
from mcp_bridge.boundary import is_client_id

__all__ = [
    "ALGORITHMS",
    "OFFERS_READ",
    "REQUIRED_SCOPES",
    "BridgeAuth",
    "JwksCache",
    "JwtVerifier",
    "open_auth",
    "resource_uri",
]

log = get_logger(__name__)

OFFERS_READ = "offers:read"
# Every tool today reads offers (search_offers, list_airlines), so the one scope is asked of every request to
# /mcp; a tool that writes (orders) will need a check of its own scope per tool.
REQUIRED_SCOPES = [OFFERS_READ]
# Asymmetric algorithms only: a symmetric (HS*) or "none" token is never accepted, whatever its header says.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def resource_uri(settings: Settings) -> str:
    """The bridge's resource URI (RFC 8707): the audience its tokens must name."""
    return settings.auth_resource or settings.bridge_url


class JwksCache:
    """The issuer's signing keys (its JWK Set), by key id, fetched when needed and kept between fetches.

    A key id it does not know, or a set older than ``max_age_s``, makes it fetch the set again, at most
    once per ``min_refresh_s`` and one fetch at a time; a failed fetch keeps the keys it had.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        issuer: str,
        jwks_url: str = "",
        min_refresh_s: float = 30.0,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._min_refresh_s = min_refresh_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last attempt, successful or not
        self._loaded_at: float | None = None  # the last successful one
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key ``kid`` names (a token without one: the set's only key), or None when the issuer has none."""
        found = self._find(kid)
        if found is not None and not self._stale():
            return found
        async with self._lock:
            last = self._fetched_at
            if last is None or self._clock() - last >= self._min_refresh_s:
                await self._refresh()
        return self._find(kid)

    def _stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at >= self._max_age_s

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        self._fetched_at = self._clock()
        self.fetches += 1
        try:
            url = self._jwks_url or await self._discover()
            response = await self._http.get(url)
            response.raise_for_status()
            keys = _usable_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("issuer keys not fetched: keeping the ones held", issuer=self._issuer, error=str(exc))
            return
        self._jwks_url = url
        self._keys = keys
        self._loaded_at = self._clock()
        log.info("issuer keys fetched", issuer=self._issuer, kids=sorted(str(k) for k in keys))

    async def _discover(self) -> str:
        """The issuer's ``jwks_uri`` from its RFC 8414 metadata (or, failing that, OpenID discovery)."""
        parts = urlsplit(self._issuer)
        base, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
        for url in (
            f"{base}/.well-known/oauth-authorization-server{path}",
            f"{self._issuer.rstrip('/')}/.well-known/openid-configuration",
        ):
            response = await self._http.get(url)
            if response.status_code != 200:
                continue
            metadata = response.json()
            # RFC 8414 §3.3: metadata naming another issuer is not this issuer's.
            if metadata.get("issuer") != self._issuer or not isinstance(metadata.get("jwks_uri"), str):
                raise ValueError(f"metadata at {url} is not issuer {self._issuer}'s or has no jwks_uri")
            return str(metadata["jwks_uri"])
        raise ValueError(f"issuer {self._issuer} publishes no authorization server metadata")


def _usable_keys(document: Any) -> dict[str | None, jwt.PyJWK]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWKError:
            continue  # a key type or algorithm this bridge does not verify with
        if key.algorithm_name in ALGORITHMS:
            keys[entry.get("kid")] = key
    return keys


class JwtVerifier(TokenVerifier):
    """The SDK's token verifier for JWT access tokens (RFC 9068) of one issuer, for one resource."""

    def __init__(self, keys: JwksCache, *, issuer: str, resource: str, leeway_s: float = 30.0) -> None:
        self.keys = keys
        self.issuer = issuer
        self.resource = resource
        # Either spelling of the resource, with or without a trailing slash, is this resource.
        self._audiences = sorted({resource, resource.rstrip("/"), resource.rstrip("/") + "/"})
        self.leeway_s = leeway_s

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await self._claims(token)
        except jwt.PyJWTError as exc:
            # The reason, never the token: it is a credential.
            log.info("bearer token refused", reason=str(exc))
            return None
        client = claims.get("client_id", claims.get("sub"))
        if not isinstance(client, str) or not is_client_id(client):
            log.info("bearer token refused", reason="no client_id or sub that names a client")
            return None
        return AccessToken(
            token=token,
            client_id=client,
            scopes=_scopes(claims),
            # The SDK refuses a token past expires_at itself, without leeway: this is when the bridge stops.
            expires_at=int(claims["exp"] + self.leeway_s),
            resource=self.resource,
            subject=claims.get("sub") if isinstance(claims.get("sub"), str) else None,
            claims={"iss": claims["iss"]},
        )

    async def _claims(self, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in ALGORITHMS:
            raise jwt.InvalidAlgorithmError(f"algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise jwt.InvalidKeyError(f"the issuer has no signing key {kid!r}")
        return jwt.decode(
            token,
            key,
            algorithms=list(ALGORITHMS),
            audience=self._audiences,
            issuer=self.issuer,
            leeway=self.leeway_s,
            options={"require": ["exp", "iss", "aud"]},
        )


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    """RFC 9068's space-separated ``scope``, or the ``scp`` list some issuers use instead."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [s for s in scp if isinstance(s, str)]
    return []


@dataclass(frozen=True)
class BridgeAuth:
    """What the MCP server is given when the bridge authenticates: the SDK's settings and our verifier."""

    settings: AuthSettings
    verifier: TokenVerifier

    def metadata(self) -> ProtectedResourceMetadata:
        """The RFC 9728 document, as the SDK serves it at the resource's path-suffixed well-known URL."""
        resource = self.settings.resource_server_url
        assert resource is not None  # always set by open_auth
        return ProtectedResourceMetadata(
            resource=resource,
            authorization_servers=[self.settings.issuer_url],
            scopes_supported=self.settings.required_scopes,
        )


def bridge_auth(settings: Settings, keys: JwksCache) -> BridgeAuth:
    resource = resource_uri(settings)
    verifier = JwtVerifier(keys, issuer=settings.auth_issuer, resource=resource, leeway_s=settings.auth_leeway_s)
    auth_settings = AuthSettings(
        # As strings: the model keeps an empty path empty, so the issuer reads exactly as its tokens name it.
        issuer_url=settings.auth_issuer,
        resource_server_url=resource,
        required_scopes=REQUIRED_SCOPES,
        # Our verifier checks the audience; the SDK checks it again against resource_server_url.
        validate_token_resource=True,
    )
    return BridgeAuth(auth_settings, verifier)


@contextlib.asynccontextmanager
async def open_auth(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[BridgeAuth | None]:
    """The bridge's authentication as ``JB_AUTH`` says (None: off), with its HTTP client to the issuer."""
    if settings.auth == "off":
        yield None
        return
    async with build_http_client(timeout_s=5.0, max_connections=4, transport=transport) as http:
        keys = JwksCache(
            http,
            issuer=settings.auth_issuer,
            jwks_url=settings.auth_jwks_url,
            min_refresh_s=settings.auth_jwks_min_refresh_s,
            max_age_s=settings.auth_jwks_max_age_s,
        )
        log.info("bearer tokens required", issuer=settings.auth_issuer, resource=resource_uri(settings))
        yield bridge_auth(settings, keys)
