"""Sessions are admitted per client: one client stops at its own cap (429 with Retry-After) while another
still gets in, and a session the client deletes, or leaves idle as long as the SDK's idle timeout, frees
its place (regression: one anonymous client once took all 10,000 of the SDK's sessions for 30 minutes)."""

from __future__ import annotations

import uuid

import httpx
from starlette.types import Receive, Scope, Send

from mcp_bridge.boundary import SessionLimits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SessionManagerDouble:
    """Answers like the SDK's session manager: a POST without a session id opens one; known ids are served."""

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        headers = dict(scope["headers"])
        session_id = headers.get(b"mcp-session-id", b"").decode() or None
        extra: list[tuple[bytes, bytes]] = []
        if session_id is None:
            session_id = uuid.uuid4().hex
            self.sessions.add(session_id)
            extra = [(b"mcp-session-id", session_id.encode())]
            status = 200
        elif session_id not in self.sessions:
            status = 404
        elif scope["method"] == "DELETE":
            self.sessions.discard(session_id)
            status = 200
        else:
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b"{}"})


def limited(per_client: int = 3, idle_s: float = 60.0) -> tuple[SessionLimits, SessionManagerDouble, FakeClock]:
    clock = FakeClock()
    inner = SessionManagerDouble()
    return SessionLimits(inner, per_client=per_client, idle_s=idle_s, clock=clock), inner, clock


async def open_session(http: httpx.AsyncClient, client: str | None) -> httpx.Response:
    headers = {"x-client-id": client} if client else {}
    return await http.post("/mcp", headers=headers, content=b"{}")


async def test_a_client_at_its_cap_gets_429_with_retry_after_while_another_client_gets_in() -> None:
    app, inner, clock = limited(per_client=3, idle_s=60)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bridge") as http:
        opened = [await open_session(http, "greedy") for _ in range(3)]
        assert all(r.status_code == 200 for r in opened)
        clock.now += 20
        refused = await open_session(http, "greedy")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "40"
        assert "at most 3" in refused.json()["error"]["message"]
        assert (await open_session(http, "polite")).status_code == 200
    assert len(inner.sessions) == 4
    assert app.held("greedy") == 3


async def test_a_deleted_or_idle_session_frees_its_place_and_a_used_one_starts_its_idle_time_again() -> None:
    app, _, clock = limited(per_client=2, idle_s=60)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bridge") as http:
        first, second = [(await open_session(http, "a")).headers["mcp-session-id"] for _ in range(2)]
        assert (await open_session(http, "a")).status_code == 429
        deleted = await http.delete("/mcp", headers={"mcp-session-id": first, "x-client-id": "a"})
        assert deleted.status_code == 200
        assert (await open_session(http, "a")).status_code == 200
        assert (await open_session(http, "a")).status_code == 429
        clock.now += 59
        used = {"mcp-session-id": second, "x-client-id": "a"}
        await http.post("/mcp", headers=used, content=b"{}")  # used: its idle time restarts
        clock.now += 2
        assert app.held("a") == 1  # the third expired, the one just used did not
        assert (await open_session(http, "a")).status_code == 200


async def test_a_session_the_sdk_no_longer_knows_is_forgotten_here_too() -> None:
    app, inner, _ = limited(per_client=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bridge") as http:
        session = (await open_session(http, "a")).headers["mcp-session-id"]
        inner.sessions.clear()  # expired inside the SDK
        used = {"mcp-session-id": session, "x-client-id": "a"}
        assert (await http.post("/mcp", headers=used, content=b"{}")).status_code == 404
        assert (await open_session(http, "a")).status_code == 200


async def test_a_session_is_its_openers_another_client_naming_it_gets_404_and_it_stays_counted() -> None:
    app, inner, _ = limited(per_client=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bridge") as http:
        session = (await open_session(http, "a")).headers["mcp-session-id"]
        requests_before = inner.requests
        stolen = {"mcp-session-id": session, "x-client-id": "b"}
        assert (await http.post("/mcp", headers=stolen, content=b"{}")).status_code == 404
        assert (await http.delete("/mcp", headers=stolen)).status_code == 404
        assert inner.requests == requests_before  # never reached the SDK
        assert app.held("a") == 1  # still a's, still counted
        assert (await open_session(http, "a")).status_code == 429
        mine = {"mcp-session-id": session, "x-client-id": "a"}
        assert (await http.post("/mcp", headers=mine, content=b"{}")).status_code == 200


async def test_anonymous_clients_are_told_apart_by_address() -> None:
    app, _, _ = limited(per_client=1)
    here = httpx.ASGITransport(app, client=("10.0.0.1", 5000))
    there = httpx.ASGITransport(app, client=("10.0.0.2", 5000))
    async with (
        httpx.AsyncClient(transport=here, base_url="http://b") as a,
        httpx.AsyncClient(transport=there, base_url="http://b") as b,
    ):
        assert (await open_session(a, None)).status_code == 200
        assert (await open_session(a, None)).status_code == 429
        assert (await open_session(b, None)).status_code == 200
    assert app.held("anonymous@10.0.0.1") == 1


async def test_a_refused_opening_request_holds_no_place() -> None:
    clock = FakeClock()

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 400, "headers": [(b"mcp-session-id", b"x")]})
        await send({"type": "http.response.body", "body": b""})

    app = SessionLimits(refuse, per_client=1, idle_s=60, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://b") as http:
        for _ in range(3):
            assert (await open_session(http, "a")).status_code == 400
    assert app.held("a") == 0
