"""Capabilities as tools: what ``[mcp] expose`` may name, and a call's input checked as the
host checks it, without a broker."""

from __future__ import annotations

import pytest
from opsagent.assistant import tools
from opsagent.assistant.environment import clean
from opsagent.host import plugins
from opsagent.host.config import McpConfig
from opsagent.schema import InputError


@pytest.fixture(scope="module")
def caps():
    return plugins.load(strict=False).capabilities


def test_expose_names_installed_capabilities_never_control_ones(caps) -> None:
    assert [c.msg_type for c in tools.exposed(caps, ["test_echo", "test_echo"])] == ["test_echo"]
    assert tools.exposed(caps, []) == []
    for control in ("health_ping", "shutdown", "request_status"):
        with pytest.raises(tools.ExposeError, match=f"{control} is a control capability"):
            tools.exposed(caps, [control])
    with pytest.raises(tools.ExposeError, match="no capability 'nope' is installed"):
        tools.exposed(caps, ["nope"])


def test_a_call_gives_the_hosts_path_errors_and_keeps_routing_to_the_server(caps) -> None:
    sleep = caps["test_sleep"]
    assert tools.request_body(sleep, {"seconds": 1}) == {"msg_type": "test_sleep", "seconds": 1}
    assert tools.request_body(sleep, {"msg_type": "test_sleep", "seconds": 1})["seconds"] == 1
    with pytest.raises(InputError) as missing:
        tools.request_body(sleep, {})
    assert missing.value.errors == ["$.seconds: required field missing"]
    with pytest.raises(InputError) as routed:
        tools.request_body(sleep, {"seconds": 1, "request_id": "x", "namespace": "other",
                                   "msg_type": "test_echo"})
    assert routed.value.errors == [
        "$.request_id: set by the MCP server, not by the caller; leave it out",
        "$.namespace: set by the MCP server, not by the caller; leave it out",
        "$.msg_type: expected 'test_sleep' or nothing, got 'test_echo'",
    ]
    with pytest.raises(InputError) as bad:
        tools.check_request_id("../x")
    assert bad.value.errors == ["$.request_id: expected a request_id, got '../x'"]


def test_the_environment_keeps_only_its_allow_list() -> None:
    env = {"PATH": "/bin", "X509_USER_PROXY": "/tmp/x509up_u0", "SWF_API_TOKEN": "t",
           "ACTIVEMQ_PASSWORD": "p", "OPSAGENT_MCP_BROKER_PASSWORD": "q", "HOME": "/h",
           "PANDA_AUTH_ID_TOKEN": "z", "OPSAGENT_CONFIG": "/etc/o.toml"}
    assert clean(env) == {"PATH": "/bin", "HOME": "/h", "OPSAGENT_CONFIG": "/etc/o.toml"}


def test_the_http_endpoint_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        McpConfig(http_address="0.0.0.0")  # noqa: S104 - the refusal under test
    assert McpConfig(http_address="::1").http_address == "::1"
