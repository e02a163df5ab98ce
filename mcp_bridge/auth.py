"""Who may call the bridge, and which tools each caller may use: an OAuth 2.1 resource server, as the MCP
authorization specification has it.

With ``JB_AUTH=on`` (the default) every request to /mcp carries a bearer token: a JWT from the authorization
server, or an API key of a machine client (`mcp_bridge.api_keys`). The MCP SDK does the HTTP part: its
``BearerAuthBackend`` reads the ``Authorization`` header and its ``RequireAuthMiddleware`` answers 401 with
``WWW-Authenticate: Bearer … resource_metadata="<url>"`` (no or a bad token). What it leaves to the server is
here: `JwtVerifier` checks a token's signature against the issuer's keys, its issuer, its audience (the
bridge's resource URI, RFC 8707), its expiry and scopes, and names its client; `JwksCache` holds the issuer's
keys, fetching them again for a key id it does not know (key rotation), never more often than
``min_refresh_s`` (a flood of made-up key ids costs the issuer one request per period).

Scopes are per tool (`TOOL_SCOPES`): `ScopeGate` answers a ``tools/call`` whose token lacks the tool's scope
with 403 ``insufficient_scope`` naming it (the specification's scope challenge, so a client can step up), and
`ScopedToolList` shows each caller only the tools it may call. The RFC 9728 metadata lists every scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import cors_middleware, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.auth import ProtectedResourceMetadata
from mcp_types import ListToolsResult
from pydantic import AnyHttpUrl
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jetbridge.http import build_http_client
from jetbridge.log import get_logger
from jetbridge.settings import Settings
from mcp_bridge.api_keys import ApiKeyVerifier, KeyFile
from mcp_bridge.boundary import is_client_id

__all__ = [
    "ALGORITHMS",
    "OFFERS_READ",
    "ORDERS_WRITE",
    "SCOPES",
    "TOOL_SCOPES",
    "BridgeAuth",
    "BridgeVerifier",
    "JwksCache",
    "JwtVerifier",
    "ScopeGate",
    "ScopedToolList",
    "granted_scopes",
    "open_auth",
    "resource_uri",
]

log = get_logger(__name__)

OFFERS_READ = "offers:read"
ORDERS_WRITE = "orders:write"
# Every scope the bridge knows, as its metadata lists them (scopes_supported) and the issuer grants them.
SCOPES = (OFFERS_READ, ORDERS_WRITE)
# The scope each tool needs. A tool missing here needs none beyond a valid token: every tool must be listed
# (tests/unit/test_bridge_scopes.py checks the server's tools against it).
TOOL_SCOPES: dict[str, str] = {
    "search_offers": OFFERS_READ,
    "list_airlines": OFFERS_READ,
    # Pricing is shopping; booking, seeing and cancelling orders is not.
    "price_offer": OFFERS_READ,
    "create_order": ORDERS_WRITE,
    "get_order": ORDERS_WRITE,
    "cancel_order": ORDERS_WRITE,
}
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


class BridgeVerifier(TokenVerifier):
    """The bridge's one token verifier: API keys (``jbk_…``) by the keys file, every other token as a JWT."""

    def __init__(self, jwt_verifier: JwtVerifier, api_keys: ApiKeyVerifier) -> None:
        self.jwt = jwt_verifier
        self.api_keys = api_keys

    async def verify_token(self, token: str) -> AccessToken | None:
        if self.api_keys.handles(token):
            return await self.api_keys.verify_token(token)
        return await self.jwt.verify_token(token)


@dataclass(frozen=True)
class BridgeAuth:
    """What the MCP server is given when the bridge authenticates: the SDK's settings and our verifier."""

    settings: AuthSettings
    verifier: TokenVerifier

    @property
    def resource(self) -> str:
        resource = self.settings.resource_server_url
        assert resource is not None  # always set by bridge_auth
        return str(resource)

    def metadata(self) -> ProtectedResourceMetadata:
        """The RFC 9728 document: the resource, its authorization server and every scope of every tool."""
        return ProtectedResourceMetadata(
            resource=self.settings.resource_server_url or self.resource,
            authorization_servers=[self.settings.issuer_url],
            scopes_supported=list(SCOPES),
        )

    def metadata_routes(self) -> list[Route]:
        """The metadata at the resource's path-suffixed URL and at the host's root (the specification's last
        fallback), each with the SDK's CORS handling (browser-based clients read it too)."""
        routes = create_protected_resource_routes(
            resource_url=AnyHttpUrl(self.resource),
            authorization_servers=[self.settings.issuer_url],
            scopes_supported=list(SCOPES),
        )
        handler = ProtectedResourceMetadataHandler(self.metadata()).handle
        root = "/.well-known/oauth-protected-resource"
        if all(route.path != root for route in routes):
            routes.append(
                Route(root, endpoint=cors_middleware(handler, ["GET", "OPTIONS"]), methods=["GET", "OPTIONS"])
            )
        return routes

    def metadata_url(self) -> str:
        """Where the metadata is (RFC 9728 §3.1: the well-known path before the resource's own path)."""
        parts = urlsplit(self.resource)
        return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path.rstrip('/')}"


def bridge_auth(settings: Settings, keys: JwksCache) -> BridgeAuth:
    resource = resource_uri(settings)
    jwt_verifier = JwtVerifier(keys, issuer=settings.auth_issuer, resource=resource, leeway_s=settings.auth_leeway_s)
    api_keys = ApiKeyVerifier(KeyFile(settings.api_keys_path), resource=resource)
    auth_settings = AuthSettings(
        # As strings: the model keeps an empty path empty, so the issuer reads exactly as its tokens name it.
        issuer_url=settings.auth_issuer,
        resource_server_url=resource,
        # None here: the SDK asks only for a valid token; each tool's scope is checked by ScopeGate.
        required_scopes=[],
        # Our verifier checks the audience; the SDK checks it again against resource_server_url.
        validate_token_resource=True,
    )
    return BridgeAuth(auth_settings, BridgeVerifier(jwt_verifier, api_keys))


def granted_scopes(scope: Scope | None) -> frozenset[str] | None:
    """The scopes of the bearer token of this ASGI scope's request; None when the bridge does not authenticate."""
    if scope is None or "user" not in scope:
        return None
    user = scope["user"]
    return frozenset(user.scopes) if isinstance(user, AuthenticatedUser) else frozenset()


class ScopeGate:
    """ASGI middleware, inside the SDK's authentication: a tool call needs its tool's scope (`TOOL_SCOPES`).

    A token with none of the bridge's scopes is refused on every request to /mcp; a ``tools/call`` of a tool
    whose scope the token lacks is refused before the MCP server reads it. Both answer as the MCP
    authorization specification's scope challenge has it: 403, ``WWW-Authenticate: Bearer
    error="insufficient_scope", scope="<needed>", resource_metadata="<url>"``, so the client can ask its
    authorization server for a token with that scope and retry. Only the body of a POST is read (up to
    ``max_body`` bytes, then handed on untouched, for the SDK to refuse with 413), and only to find the
    method and tool name; unauthenticated requests pass to the SDK, which answers them 401.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metadata_url: str,
        max_body: int,
        path: str = "/mcp",
        on_refused: Callable[[str, str, Mapping[str, object]], None] | None = None,
    ) -> None:
        self.app = app
        self.metadata_url = metadata_url
        self.max_body = max_body
        self.path = path
        # Called with (client, tool, arguments) for each tool call refused here: the bridge audits it.
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        granted = granted_scopes(scope) if scope["type"] == "http" else None
        if granted is None or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        if not isinstance(scope["user"], AuthenticatedUser):
            # No valid token: the SDK answers 401; its challenge gains the scope to ask for first.
            await self.app(scope, receive, _with_scope_hint(send))
            return
        if not granted & set(SCOPES):
            await self._challenge(send, SCOPES, "the token grants none of the bridge's scopes")
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages, body, whole = await self._peek(receive)
        tool, arguments = _called_tool(body) if whole else (None, {})
        needed = TOOL_SCOPES.get(tool or "")
        if tool is not None and needed is not None and needed not in granted:
            log.info("tool call refused: scope missing", tool=tool, scope=needed)
            if self.on_refused is not None:
                self.on_refused(scope["user"].access_token.client_id, tool, arguments)
            await self._challenge(send, (needed,), f"{tool} needs the scope {needed}")
            return
        await self.app(scope, _replay(messages, receive), send)

    async def _peek(self, receive: Receive) -> tuple[list[Message], bytes, bool]:
        """The request's first messages, up to ``max_body`` bytes of body, and whether that was all of it."""
        messages: list[Message] = []
        size, more = 0, True
        while more and size <= self.max_body:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, b"", False
            size += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = b"".join(m.get("body", b"") for m in messages)
        return messages, body, not more and size <= self.max_body

    async def _challenge(self, send: Send, scopes: tuple[str, ...], description: str) -> None:
        challenge = (
            f'Bearer error="insufficient_scope", scope="{" ".join(scopes)}", '
            f'resource_metadata="{self.metadata_url}", error_description="{description}"'
        )
        body = json.dumps({"error": "insufficient_scope", "error_description": description}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# What a client without a token should ask its authorization server for first (the specification's scope
# hint on 401): reading offers; orders:write is asked for when a booking tool needs it (403, step-up).
FIRST_SCOPE = OFFERS_READ


def _with_scope_hint(send: Send) -> Send:
    """``send``, adding ``scope="…"`` to the Bearer challenge of a 401 that has none."""

    async def hinted(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            headers = [
                (name, value + f', scope="{FIRST_SCOPE}"'.encode())
                if name.lower() == b"www-authenticate" and value.startswith(b"Bearer ") and b"scope=" not in value
                else (name, value)
                for name, value in message.get("headers", [])
            ]
            message = {**message, "headers": headers}
        await send(message)

    return hinted


def _called_tool(body: bytes) -> tuple[str | None, Mapping[str, object]]:
    """The tool a JSON-RPC ``tools/call`` names and its arguments; None for any other message (or what is
    not JSON-RPC)."""
    try:
        message = json.loads(body)
    except ValueError:
        return None, {}
    if isinstance(message, dict) and message.get("method") == "tools/call":
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        arguments = params.get("arguments") if isinstance(params, dict) else None
        return (name if isinstance(name, str) else None), (arguments if isinstance(arguments, dict) else {})
    return None, {}


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive channel that gives the messages already read, then the rest of the request."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class ScopedToolList:
    """MCP server middleware: ``tools/list`` shows the caller only the tools its token's scopes allow."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        granted = granted_scopes(getattr(ctx.request, "scope", None))
        if ctx.method != "tools/list" or granted is None:
            return result
        allowed = granted | {""}  # a tool without a scope of its own: any valid token

        def visible(name: object) -> bool:
            return TOOL_SCOPES.get(str(name), "") in allowed

        # The handler's result reaches middleware as the model or already as its JSON form.
        if isinstance(result, ListToolsResult):
            return result.model_copy(update={"tools": [t for t in result.tools if visible(t.name)]})
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            return result | {"tools": [t for t in result["tools"] if isinstance(t, dict) and visible(t.get("name"))]}
        return result


@contextlib.asynccontextmanager
async def open_auth(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[BridgeAuth | None]:
    """The bridge's authentication as ``JB_AUTH`` says (None: off), with its HTTP client to the issuer."""
    if settings.auth == "off":
        log.warning("authentication is off: any caller is whoever its x-client-id header says (JB_AUTH=off)")
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
        log.info(
            "bearer tokens required",
            issuer=settings.auth_issuer,
            resource=resource_uri(settings),
            api_keys=str(settings.api_keys_path),
        )
        yield bridge_auth(settings, keys)
