"""What the local stack runs: the scale argument and the port plan of the instances' health endpoints."""

from __future__ import annotations

import pytest

from infra.stack.components import format_scale, parse_scale, plan
from jetbridge.settings import Settings


def test_scale_names_streams_and_connectors_only() -> None:
    assert parse_scale("streams=2, connectors=3") == {"streams": 2, "connectors": 3}
    assert parse_scale("") == {}
    for bad, words in (
        ("bridge=2", "cannot be scaled"),
        ("streams", "expected KIND=N"),
        ("streams=two", "not a whole number"),
        ("connectors=0", "between 1 and"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_scale(bad)


def test_plan_gives_each_instance_its_name_and_health_port_from_the_base() -> None:
    settings = Settings(JB_HEALTH_PORT_BASE=19500, JB_BRIDGE_PORT=18280, JB_SIM_CONTROL_PORT=19300)
    stack = plan(settings, {"streams": 2, "connectors": 2})
    assert [i.name for i in stack.instances] == [
        "simulators",
        "issuer",
        "streams-1",
        "streams-2",
        "connectors-1",
        "connectors-2",
        "bridge",
    ]
    by_name = {i.name: i for i in stack.instances}
    assert by_name["streams-2"].env["JB_INSTANCE"] == "streams-2"
    assert by_name["streams-2"].env["JB_HEALTH_PORT"] == "19502"
    assert by_name["connectors-1"].health_url == "http://127.0.0.1:19551/health"
    assert by_name["bridge"].health_url == "http://127.0.0.1:18280/health"
    assert by_name["bridge"].env["JB_HEALTH_PORT"] == "0"
    assert by_name["simulators"].health_url == "http://127.0.0.1:19300/health"
    assert by_name["issuer"].health_url == "http://127.0.0.1:9400/health"  # JB_AUTH_ISSUER's, by default
    ports = [i.env["JB_HEALTH_PORT"] for i in stack.instances if i.kind in ("streams", "connectors")]
    assert len(set(ports)) == len(ports)
    assert format_scale(stack.scale) == "streams=2,connectors=2"


def test_plan_without_simulators_and_default_scale() -> None:
    stack = plan(Settings(), simulators=False)
    assert [i.name for i in stack.instances] == ["issuer", "streams-1", "connectors-1", "bridge"]
    assert stack.scale == {"streams": 1, "connectors": 1}


def test_the_development_issuer_runs_only_when_the_bridge_authenticates_with_it() -> None:
    for settings in (Settings(JB_AUTH="off"), Settings(JB_AUTH_DEV_ISSUER=False)):
        assert "issuer" not in [i.kind for i in plan(settings).instances]
    issuer = plan(Settings(JB_AUTH_ISSUER="http://127.0.0.1:19455")).instances[1]
    assert (issuer.kind, issuer.health_url) == ("issuer", "http://127.0.0.1:19455/health")
    assert issuer.argv[1:] == ("-m", "infra.auth.dev_issuer")
