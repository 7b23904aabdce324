"""docs/cutover.md, run as an operator types it, against the local ActiveMQ with a
stand-in for the old agent on the queue: the old environment file becomes the config,
selftest says where each setting came from, the new host subscribed exclusive takes the
queue from the old agent and reports to the monitor as the cleaner-killer reads it, and
stopping it hands the queue back to the old agent (the roll-back)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from docs_examples import Reader, blocks
from old_agent import AGENT, OldAgent
from opsagent.testing.http import FakeServer, Request, Response
from support import OPSAGENT, ROOT, broker_env, login

PAGE = ROOT / "docs" / "cutover.md"


def old_environment_file(broker: dict[str, str], queue: str, tmp: Path, monitor: str) -> str:
    """The old unit's environment file on this machine: the test broker, a queue of its
    own, a cache under ``tmp``, the fake monitor, and what the host has no use for."""
    host = login(broker, "host")
    return f"""\
# epicprod_ops_agent (systemd EnvironmentFile=, also sourced by the deploy scripts)
export ACTIVEMQ_HOST={broker["ACTIVEMQ_HOST"]}
ACTIVEMQ_PORT={broker["ACTIVEMQ_PORT"]}
ACTIVEMQ_USER={host["user"]}
ACTIVEMQ_PASSWORD='{host["password"]}'
EPICPROD_OPS_QUEUE={queue}
SWF_TMP_DIR={tmp / "swf-tmp"}
SWF_MONITOR_URL={monitor}
SWF_MONITOR_HTTP_URL="{monitor}"   # the tunnel
SWFMON_TOKEN=cutover-monitor-token-51e7
X509_USER_PROXY={tmp / "wenauseic" / "longproxy-for-rucio"}
EPICPROD_FETCH_TIMEOUT=240
DB_PASSWORD=cutover-database-password
"""


def ping(config: Path, env: dict[str, str]) -> str:
    done = subprocess.run([*OPSAGENT, "--config", str(config), "ping", "--timeout", "10"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_only_cutover_commands_not_run_need_the_production_host() -> None:
    never = [b.how for b in blocks(PAGE) if b.how.startswith("never")]
    assert all(re.search(r"production host|/opt|sets them", how) for how in never), never
    run = [c.line for b in blocks(PAGE) if not b.how.startswith("never") for c in b.commands]
    assert any("config --from-env" in line for line in run)
    assert any(line.endswith(" run") for line in run)


@pytest.fixture
def classic() -> dict[str, str]:
    """ActiveMQ Classic, whatever ``--broker`` says: the guide's "run both" step measures
    Classic's exclusive consumer taking the queue from the old agent's plain one at once.
    On Artemis exclusivity is the queue's setting, not the subscription's, and the first
    consumer keeps an exclusive queue (docs/cutover.md and operations, "Broker settings"):
    the same commands there show the old agent answering until it stops."""
    return broker_env("classic")


@pytest.mark.broker
def test_the_cutover_guide_runs_as_shown(classic: dict[str, str], tmp_path: Path) -> None:
    broker = classic
    heartbeats: list[dict] = []

    def heartbeat(req: Request) -> Response:
        body = req.json()
        body["authorization"] = req.header("Authorization")
        heartbeats.append(body)
        return Response.json({"ok": True})

    queue = f"/queue/cutover.{uuid.uuid4().hex[:12]}"
    etc = tmp_path / "etc-opsagent"
    etc.mkdir()
    with FakeServer() as monitor:
        monitor.route("POST", "/api/systemagents/heartbeat/", heartbeat)
        monitor.route("POST", "/api/logs/", Response.json({"ok": True}))
        monitor.route("POST", "/api/subscribers/", Response.json({"ok": True}, 201))
        old_env = tmp_path / "production.env"
        old_env.write_text(old_environment_file(broker, queue, tmp_path, monitor.url))
        # The operator's shell: no venv active, the secrets of the environment file.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ACTIVEMQ_", "SWF", "EPICPROD_", "X509_", "OPSAGENT_C"))}
        env.update(OLD_ENV=str(old_env), ETC=str(etc), XDG_STATE_HOME=str(tmp_path / "state"),
                   ACTIVEMQ_PASSWORD=login(broker, "host")["password"],
                   SWFMON_TOKEN="cutover-monitor-token-51e7",
                   # Installed as step 1 does: opsagent on the PATH.
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        old = OldAgent(broker, queue)  # the host runs the old agent
        try:
            reader = Reader(ROOT, env)
            reader.run_page(PAGE)
            assert len(reader.stopped) == 1
            assert "stopped with exit status 0" in reader.stopped[0], reader.stopped[0][-2000:]
            config = etc / "epicprod-ops-agent.toml"
            # Roll-back: the new host gone, the old agent has the queue again at once.
            assert ping(config, env).startswith(f"pong from {AGENT} (pid {os.getpid()})")
        finally:
            old.close()
    assert old.pings >= 2, "the old agent answered before the new host and after it"
    # What the cleaner-killer reads in the monitor: PRODOPS, the host's own pid.
    pids = {h["pid"] for h in heartbeats}
    assert heartbeats and {h["agent_type"] for h in heartbeats} == {"PRODOPS"}
    assert {h["namespace"] for h in heartbeats} == {"prodops"}
    assert os.getpid() not in pids and len(pids) == 1
    assert {h["authorization"] for h in heartbeats} == {"Token cutover-monitor-token-51e7"}
    assert heartbeats[-1]["status"] == "EXITED"
    # The monitor's subscriber list shows who consumes the queue, as for the old agent.
    (subscriber,) = [r.json() for r in monitor.requests_to("POST", "/api/subscribers/")]
    assert subscriber["subscriber_name"] == f"{heartbeats[0]['instance_name']}-{queue}"
    written = config.read_text()
    assert "cutover-database-password" not in written and "51e7" not in written
    assert json.loads(json.dumps(heartbeats))  # plain JSON, as posted
