"""With ``JB_AUTH=on`` only an agent with a bearer token of the issuer, for this bridge, gets in: over real HTTP,
against the development issuer and the bridge in this process (keys made here), no token or a bad one is 401
naming the RFC 9728 metadata; a token with none of the bridge's scopes is 403 ``insufficient_scope``;
``tools/list`` shows each caller the tools its scopes allow and a call of another is 403 naming the scope; a
good token works and its client is the caller; another client's session id is 404; an API key works until it
is revoked; the MCP SDK's own client-credentials client finds the issuer from the 401 alone; the issuer's keys
are fetched again once for a new key id (rotation), never more often than the floor."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.authentication import UnauthenticatedUser
from starlette.types import ASGIApp, Scope

from infra.auth.dev_issuer import (
    CLIENTS_FILE,
    SigningKey,
    add_client,
    issuer_app,
    load_clients,
    load_or_create_key,
    mint,
    secret_matches,
)
from jetbridge.cli import main as jetbridge
from jetbridge.settings import Settings, get_settings
from mcp_bridge.api_keys import KeyFile
from mcp_bridge.api_keys import new_key as new_api_key
from mcp_bridge.auth import JwksCache, JwtVerifier, open_auth
from mcp_bridge.boundary import client_id
from mcp_bridge.server import build_server, http_app
from mcp_bridge.service import SearchResult
from mcp_bridge.validation import SearchArguments
from tests.unit.test_search_arguments import RULES, RecordingBackend, real_soon

INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
).encode()
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_key() -> SigningKey:
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))


class WhoCalls(RecordingBackend):
    """Records which client each search came from."""

    def __init__(self) -> None:
        super().__init__(RULES)
        self.clients: list[str] = []

    async def search(self, arguments: SearchArguments, *, client_id: str) -> SearchResult:
        self.clients.append(client_id)
        return await super().search(arguments, client_id=client_id)


@asynccontextmanager
async def serving(app: ASGIApp, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110  # uvicorn offers no event to wait on
                await anyio.sleep(0.01)
        try:
            yield
        finally:
            server.should_exit = True


@dataclass
class Stack:
    issuer: str
    resource: str
    key: SigningKey
    backend: WhoCalls
    clients_file: Path

    @property
    def base(self) -> str:
        return self.resource.removesuffix("/mcp")

    def token(self, **overrides: Any) -> str:
        """A token as the issuer makes them, with claims (or, under ``header``, header fields) overridden."""
        claims = jwt.decode(
            mint(self.key, issuer=self.issuer, audience=self.resource, client_id="acme", scopes=["offers:read"]),
            options={"verify_signature": False},
        )
        header = {"kid": self.key.kid, **overrides.pop("header", {})}
        key = overrides.pop("key", self.key.private)
        claims.update(overrides)
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256", headers=header)


@asynccontextmanager
async def running(tmp_path: Path, **environment: Any) -> AsyncIterator[Stack]:
    """The development issuer and a bridge (tools over a recording backend) that requires its tokens.

    A context manager, not a fixture: the servers' task group must end in the task that started it."""
    issuer_port, bridge_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    resource = f"http://127.0.0.1:{bridge_port}/mcp"
    key = load_or_create_key(tmp_path / "auth")
    clients_file = tmp_path / "auth" / CLIENTS_FILE
    settings = Settings(JB_AUTH="on", JB_AUTH_ISSUER=issuer, JB_AUTH_RESOURCE=resource, JB_HOME=tmp_path, **environment)
    backend = WhoCalls()
    with anyio.fail_after(30):
        async with (
            serving(issuer_app(issuer=issuer, audience=resource, key=key, clients_file=clients_file), issuer_port),
            open_auth(settings) as auth,
        ):
            assert auth is not None
            async with serving(http_app(build_server(backend, auth=auth), settings), bridge_port):
                yield Stack(issuer, resource, key, backend, clients_file)


def challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers.get("www-authenticate", "")
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


async def initialize(stack: Stack, token: str | None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient() as http:
        return await http.post(stack.resource, content=INITIALIZE, headers=MCP_HEADERS | headers)


async def test_a_request_without_a_token_gets_401_pointing_at_the_resource_metadata(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        refused = await initialize(stack, None, **{"x-client-id": "acme"})
        assert refused.status_code == 401
        assert challenge(refused)["resource_metadata"] == f"{stack.base}/.well-known/oauth-protected-resource/mcp"
        assert challenge(refused)["error"] == "invalid_token"
        assert challenge(refused)["scope"] == "offers:read"  # what to ask the issuer for first
        assert (await initialize(stack, stack.token())).status_code == 200


async def test_wrong_audience_expired_forged_wrong_issuer_or_symmetric_tokens_get_401(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        forger = new_key()
        refused = {
            "wrong audience": stack.token(aud="http://127.0.0.1:1/mcp"),
            "no audience": stack.token(aud=None),
            "expired": stack.token(exp=1_700_000_000),
            "expired past the leeway": stack.token(exp=int(time.time()) - 120),
            "signed by another key under the issuer's kid": stack.token(key=forger.private),
            "unknown kid": stack.token(key=forger.private, header={"kid": forger.kid}),
            "wrong issuer": stack.token(iss="http://127.0.0.1:2"),
            "no client": stack.token(sub=None, client_id=None),
            "client id that is not one": stack.token(client_id="acme ota; drop"),
            "HS256 with the public key as secret": jwt.encode(
                {
                    "iss": stack.issuer,
                    "aud": stack.resource,
                    "sub": "acme",
                    "exp": 2_000_000_000,
                    "scope": "offers:read",
                },
                "a-shared-secret-of-at-least-32-bytes!!",
                algorithm="HS256",
            ),
            "not a JWT": "not-a-jwt",
        }
        for case, token in refused.items():
            response = await initialize(stack, token)
            assert response.status_code == 401, case
            assert challenge(response)["resource_metadata"].endswith("/.well-known/oauth-protected-resource/mcp")


async def test_a_token_with_none_of_the_bridges_scopes_gets_403_insufficient_scope(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        for scope in ("", "offers:readx", "openid profile"):
            response = await initialize(stack, stack.token(scope=scope))
            assert response.status_code == 403
            assert challenge(response)["error"] == "insufficient_scope"
            assert challenge(response)["scope"] == "offers:read orders:write"
            assert challenge(response)["resource_metadata"] == f"{stack.base}/.well-known/oauth-protected-resource/mcp"
        listed = await initialize(stack, stack.token(scope=None, scp=["offers:read"]))  # the scp form some issuers use
        assert listed.status_code == 200


async def call(stack: Stack, token: str, method: str, params: dict[str, Any]) -> httpx.Response:
    """One JSON-RPC request in a session opened with ``token`` (initialize, initialized, then ``method``)."""
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as http:
        opened = await http.post(stack.resource, content=INITIALIZE, headers=MCP_HEADERS | auth)
        assert opened.status_code == 200, opened.text
        session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
        initialized = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await http.post(stack.resource, content=initialized, headers=MCP_HEADERS | auth | session)
        body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": method, "params": params})
        return await http.post(stack.resource, content=body, headers=MCP_HEADERS | auth | session)


def rpc_result(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC result of a response, whether it came as JSON or as one server-sent event."""
    text = response.text
    data = next((line[5:] for line in text.splitlines() if line.startswith("data:")), text)
    return dict(json.loads(data)["result"])


async def test_tools_list_shows_each_caller_the_tools_its_scopes_allow_and_a_call_without_it_is_403(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as stack:
        reader, writer = stack.token(scope="offers:read"), stack.token(scope="orders:write")
        seen = {
            name: sorted(t["name"] for t in rpc_result(await call(stack, token, "tools/list", {}))["tools"])
            for name, token in (("reader", reader), ("writer", writer))
        }
        search = {"name": "search_offers", "arguments": {"origin": "LHR", "destination": "JFK"}}
        refused = await call(stack, writer, "tools/call", search)
        answered = await call(stack, reader, "tools/call", {"name": "list_airlines", "arguments": {}})
    assert seen == {"reader": ["list_airlines", "search_offers"], "writer": []}
    assert refused.status_code == 403
    assert challenge(refused)["error"] == "insufficient_scope"
    assert challenge(refused)["scope"] == "offers:read"  # what to ask the issuer for (step-up)
    assert stack.backend.clients == []  # the refused search reached nothing
    assert stack.backend.refusals == [("search_offers", "", "acme")]  # and is audited as refused
    assert answered.status_code == 200
    assert "result" in answered.text


async def test_another_clients_session_id_gets_404_and_the_session_stays_its_owners(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        owner, thief = stack.token(client_id="agent-a"), stack.token(client_id="agent-b")
        async with httpx.AsyncClient() as http:
            opened = await http.post(stack.resource, content=INITIALIZE, headers=MCP_HEADERS | bearer(owner))
            session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
            listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).encode()
            stolen = await http.post(stack.resource, content=listing, headers=MCP_HEADERS | bearer(thief) | session)
            closed = await http.delete(stack.resource, headers=MCP_HEADERS | bearer(thief) | session)
            still = await http.post(stack.resource, content=listing, headers=MCP_HEADERS | bearer(owner) | session)
    assert stolen.status_code == 404
    assert closed.status_code == 404
    assert still.status_code == 200  # neither read nor ended by the other agent


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_an_api_key_gets_in_as_its_client_with_its_scopes_until_revoked(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        keys = KeyFile(tmp_path / "auth" / "api-keys.toml")
        key, entry = new_api_key("pricing-bot", ["offers:read"])
        keys.add(entry)
        search = {"origin": "LHR", "destination": "JFK", "departure_date": real_soon()}
        answered = await call(stack, key, "tools/call", {"name": "search_offers", "arguments": search})
        forged = await initialize(stack, key[:-4] + "AAAA")
        stored = keys.path.read_text()
        keys.revoke(entry.key_id)
        revoked = await initialize(stack, key)
    assert answered.status_code == 200
    assert stack.backend.clients == ["pricing-bot"]
    assert forged.status_code == 401
    assert revoked.status_code == 401  # the file is read again when it changes: no restart
    assert key.split("_")[2] not in stored  # only the hash of the secret is kept
    assert entry.sha256 in stored


async def test_a_good_token_works_and_names_the_caller_whatever_x_client_id_says(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        token = stack.token(client_id="acme-ota", sub="svc-123")
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}", "x-client-id": "someone-else"})
        with anyio.fail_after(20):
            async with http, Client(streamable_http_client(stack.resource, http_client=http)) as client:
                airlines = await client.call_tool("list_airlines", {})
                result = await client.call_tool(
                    "search_offers", {"origin": "LHR", "destination": "JFK", "departure_date": real_soon()}
                )
                refused = await client.call_tool("search_offers", {"origin": "LHR"})
        assert not airlines.is_error
        assert not result.is_error
        assert refused.is_error
        assert stack.backend.clients == ["acme-ota"]
        assert stack.backend.refusals == [("search_offers", "destination", "acme-ota")]


async def test_sessions_are_capped_per_token_client_not_per_the_header_it_sends(tmp_path: Path) -> None:
    async with running(tmp_path, JB_BRIDGE_MAX_SESSIONS_PER_CLIENT=1) as stack:
        acme, other = stack.token(client_id="acme"), stack.token(client_id="other")
        assert (await initialize(stack, acme, **{"x-client-id": "a"})).status_code == 200
        assert (await initialize(stack, acme, **{"x-client-id": "b"})).status_code == 429
        assert (await initialize(stack, other, **{"x-client-id": "a"})).status_code == 200


async def test_the_sdks_client_credentials_client_finds_the_issuer_from_the_401_and_gets_in(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        secret = add_client(stack.clients_file, "acme-ota", ["offers:read"])

        class Memory:
            tokens: OAuthToken | None = None
            info: OAuthClientInformationFull | None = None

            async def get_tokens(self) -> OAuthToken | None:
                return self.tokens

            async def set_tokens(self, tokens: OAuthToken) -> None:
                self.tokens = tokens

            async def get_client_info(self) -> OAuthClientInformationFull | None:
                return self.info

            async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
                self.info = client_info

        storage = Memory()
        provider = ClientCredentialsOAuthProvider(
            server_url=stack.resource,
            storage=storage,
            client_id="acme-ota",
            client_secret=secret,
            scope="offers:read",
            issuer=stack.issuer,
        )
        http = httpx2.AsyncClient(auth=provider)
        with anyio.fail_after(30):
            async with http, Client(streamable_http_client(stack.resource, http_client=http)) as client:
                result = await client.call_tool(
                    "search_offers", {"origin": "LHR", "destination": "JFK", "departure_date": real_soon()}
                )
        assert not result.is_error
        assert stack.backend.clients == ["acme-ota"]
        assert storage.tokens is not None
        claims = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
        assert (claims["aud"], claims["client_id"], claims["scope"]) == (stack.resource, "acme-ota", "offers:read")


async def test_the_protected_resource_metadata_names_the_resource_its_issuer_and_scope(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        async with httpx.AsyncClient() as http:
            documents = [
                (await http.get(f"{stack.base}/.well-known/oauth-protected-resource{suffix}")).json()
                for suffix in ("/mcp", "")
            ]
            issuer = (await http.get(f"{stack.issuer}/.well-known/oauth-authorization-server")).json()
            keys = (await http.get(issuer["jwks_uri"])).json()
        for document in documents:
            assert document["resource"] == stack.resource
            assert document["authorization_servers"] == [stack.issuer]
            assert document["scopes_supported"] == ["offers:read", "orders:write"]
            assert document["bearer_methods_supported"] == ["header"]
        assert issuer["issuer"] == stack.issuer
        assert issuer["grant_types_supported"] == ["client_credentials"]
        assert [k["kid"] for k in keys["keys"]] == [stack.key.kid]
        assert "d" not in keys["keys"][0]  # the public half only


async def test_the_issuer_grants_registered_clients_their_scopes_for_this_resource_only(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        secret = add_client(stack.clients_file, "acme-ota", ["offers:read"])
        token_url = f"{stack.issuer}/token"
        basic = httpx.BasicAuth("acme-ota", secret)
        async with httpx.AsyncClient() as http:

            async def grant(auth: httpx.Auth = basic, **form: str) -> httpx.Response:
                return await http.post(token_url, data={"grant_type": "client_credentials", **form}, auth=auth)

            granted = await grant(resource=stack.resource)
            wrong_secret = await grant(auth=httpx.BasicAuth("acme-ota", "guess"))
            unknown = await grant(auth=httpx.BasicAuth("nobody", secret))
            too_much = await grant(scope="offers:read orders:write")
            none_of_them = await grant(scope="orders:write")
            elsewhere = await grant(resource="https://other.example/mcp")
            posted = await grant(auth=httpx.Auth(), client_id="acme-ota", client_secret=secret)
            wrong_grant = await grant(grant_type="password")
        assert granted.status_code == 200
        assert granted.headers["cache-control"] == "no-store"
        assert granted.json()["token_type"] == "Bearer"
        assert (await initialize(stack, granted.json()["access_token"])).status_code == 200
        assert [r.status_code for r in (wrong_secret, unknown)] == [401, 401]
        assert wrong_secret.json()["error"] == "invalid_client"
        assert (too_much.status_code, too_much.json()["scope"]) == (200, "offers:read")  # what it may have
        assert (none_of_them.status_code, none_of_them.json()["error"]) == (400, "invalid_scope")
        assert (elsewhere.status_code, elsewhere.json()["error"]) == (400, "invalid_target")
        assert posted.status_code == 200
        assert wrong_grant.json()["error"] == "unsupported_grant_type"
        assert secret not in stack.clients_file.read_text()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Issuer:
    """A JWKS endpoint whose keys the test changes, counting fetches."""

    keys: list[SigningKey]
    fetches: int = 0

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/jwks"
            self.fetches += 1
            return httpx.Response(200, json={"keys": [k.public_jwk for k in self.keys]})

        return httpx.MockTransport(handle)


ISSUER, RESOURCE = "https://issuer.example", "https://bridge.example/mcp"


def signed(key: SigningKey, **claims: Any) -> str:
    return mint(key, issuer=ISSUER, audience=RESOURCE, client_id="acme", scopes=["offers:read"], **claims)


async def test_a_new_key_id_is_fetched_once_and_unknown_ones_no_more_often_than_the_floor() -> None:
    old, new, stranger = new_key(), new_key(), new_key()
    issuer, clock = Issuer([old]), Clock()
    async with httpx.AsyncClient(transport=issuer.transport()) as http:
        keys = JwksCache(http, issuer=ISSUER, jwks_url="https://issuer.example/jwks", min_refresh_s=30, clock=clock)
        verifier = JwtVerifier(keys, issuer=ISSUER, resource=RESOURCE)
        assert await verifier.verify_token(signed(old)) is not None
        assert await verifier.verify_token(signed(old)) is not None
        assert issuer.fetches == 1
        clock.now += 31
        issuer.keys = [new, old]  # the issuer rotates: a new key first, the old one still published
        tokens = [signed(new) for _ in range(5)]
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for token in tokens:
                    tg.start_soon(verifier.verify_token, token)
        assert all([await verifier.verify_token(t) for t in tokens])
        assert issuer.fetches == 2  # five concurrent tokens with the new kid: one fetch
        assert await verifier.verify_token(signed(stranger)) is None  # within the floor: refused, not fetched
        assert issuer.fetches == 2
        clock.now += 31
        assert await verifier.verify_token(signed(stranger)) is None
        assert issuer.fetches == 3
        assert await verifier.verify_token(signed(old)) is not None  # still published: still good
        assert issuer.fetches == 3


async def test_issuer_keys_are_found_from_its_metadata_and_a_failed_fetch_keeps_the_ones_held() -> None:
    key, clock = new_key(), Clock()
    up = True

    def handle(request: httpx.Request) -> httpx.Response:
        if not up:
            return httpx.Response(503)
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": "https://keys.example/k"})
        return httpx.Response(200, json={"keys": [key.public_jwk]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        keys = JwksCache(http, issuer=ISSUER, min_refresh_s=1, max_age_s=60, clock=clock)
        verifier = JwtVerifier(keys, issuer=ISSUER, resource=RESOURCE)
        token = await verifier.verify_token(signed(key))
        assert isinstance(token, AccessToken)
        assert (token.client_id, token.scopes, token.resource) == ("acme", ["offers:read"], RESOURCE)
        up = False
        clock.now += 120  # stale: refetched, the issuer is down, the held key still verifies
        assert await verifier.verify_token(signed(key)) is not None
        assert keys.fetches == 2


def test_who_calls_is_the_tokens_client_when_auth_is_on_and_the_header_only_when_it_is_off() -> None:
    headers = [(b"x-client-id", b"claimed")]
    token = AccessToken(token="t", client_id="acme-ota", scopes=["offers:read"])
    authenticated: Scope = {"type": "http", "headers": headers, "user": AuthenticatedUser(token)}
    unauthenticated: Scope = {"type": "http", "headers": headers, "user": UnauthenticatedUser()}
    auth_off: Scope = {"type": "http", "headers": headers}
    assert [client_id(s) for s in (authenticated, unauthenticated, auth_off)] == ["acme-ota", "anonymous", "claimed"]


def test_the_signing_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path / "auth")
    path = tmp_path / "auth" / "signing-key.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(tmp_path / "auth").kid == first.kid
    path.chmod(0o644)
    load_or_create_key(tmp_path / "auth")
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_client_is_kept_with_a_hash_of_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    secret = add_client(path, "acme", ["offers:read"])
    add_client(path, "other", [])
    clients = load_clients(path)
    assert set(clients) == {"acme", "other"}
    assert secret_matches(secret, clients["acme"].secret_hash)
    assert not secret_matches(secret + "x", clients["acme"].secret_hash)
    with pytest.raises(ValueError, match="unknown scopes"):
        add_client(path, "acme", ["admin"])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("JB_HOME", str(tmp_path))
    monkeypatch.setenv("JB_AUTH_RESOURCE", RESOURCE)
    monkeypatch.setenv("JB_AUTH_ISSUER", ISSUER)
    get_settings.cache_clear()
    try:
        yield tmp_path
    finally:
        get_settings.cache_clear()


def test_jetbridge_token_mints_a_token_of_the_issuers_key_for_this_bridge(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert jetbridge(["token", "--client", "acme-ota", "--scopes", "offers:read", "--ttl", "600"]) == 0
    out, err = capsys.readouterr()
    assert "expires" in err
    key = jwt.PyJWK(load_or_create_key(home / "auth").public_jwk)
    claims = jwt.decode(out.strip(), key, algorithms=["RS256"], audience=RESOURCE, issuer=ISSUER)
    assert (claims["client_id"], claims["sub"], claims["scope"]) == ("acme-ota", "acme-ota", "offers:read")
    assert 590 <= claims["exp"] - time.time() <= 610
    assert jetbridge(["token", "--client", "not ok", "--scopes", "offers:read"]) == 2
