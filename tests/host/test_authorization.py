"""Who may ask is decided by the broker's authenticated user, never by the body.

Against the real broker, which runs with authentication and stamps each message with
the user that sent it (scripts/services.d/activemq.sh): the host (``opsagent``), the web
tier (``webtier``) and an outsider who may connect but is allowed nothing here.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import uuid
from typing import Any

import pytest
import stomp
from opsagent.testing import Harness
from support import OPSAGENT, connect

pytestmark = pytest.mark.broker

ECHO_FOR_WEB = {"capability.test_echo": {"allow_users": ["webtier"]}}


def forbidden(caller, request_id: str) -> dict[str, Any]:
    answer = caller.wait_event(request_id)
    assert answer["msg_type"] == "request_rejected", answer
    assert answer["code"] == "forbidden", answer
    return answer


def queue_is_empty(broker: dict[str, str], queue: str, wait: float = 1.0) -> bool:
    got = threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            got.set()

    conn = connect(broker, "host")
    conn.set_listener("l", Listener())
    conn.subscribe(queue, id="drain", ack="auto")
    try:
        return not got.wait(wait)
    finally:
        conn.disconnect()


def test_the_broker_overwrites_a_sender_forged_by_a_client(broker):
    queue = f"/queue/test.forge.{uuid.uuid4().hex[:12]}"
    seen: list[dict[str, str]] = []
    arrived = threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            seen.append(frame.headers)
            arrived.set()

    reader = connect(broker, "web")
    reader.set_listener("l", Listener())
    reader.subscribe(queue, id="r", ack="auto")
    outsider = connect(broker, "outsider")
    outsider.send(queue, "{}", headers={"JMSXUserID": "opsagent"})
    outsider.disconnect()
    assert arrived.wait(10)
    reader.disconnect()
    assert seen[0]["JMSXUserID"] == "outsider"


def test_an_outsider_is_refused_journaled_and_acknowledged(host_factory, caller_for, broker):
    host = host_factory(extra=ECHO_FOR_WEB).start()
    web = caller_for(host)
    assert web.wait_event(web.send("test_echo", {"text": "from the web"}))["ok"]

    outsider = caller_for(host, who="outsider")
    # Everything in the body and the headers says "web tier"; the broker says otherwise.
    body = {"msg_type": "test_echo", "namespace": "prodops", "request_id": "forged-1",
            "reply_to": outsider.reply_to, "sender": "webtier", "text": "let me in"}
    outsider.conn.send(host.queue, json.dumps(body).encode(),
                       headers={"persistent": "true", "JMSXUserID": "webtier"})
    answer = forbidden(outsider, "forged-1")
    assert answer["reason"] == "forbidden: broker user 'outsider' may not call test_echo"
    assert "webtier" not in answer["reason"]  # names the capability, not who may call it
    reply = outsider.wait_reply(lambda r: r.get("request_id") == "forged-1")
    assert reply["code"] == "forbidden"
    assert "let me in" not in host.text()  # refused before the job: it never ran

    assert host.stop() == 0
    journal = sqlite3.connect(host.tmp / "state" / "journal.sqlite3")
    rows = journal.execute(
        "SELECT id, msg_type, state, outcome FROM jobs WHERE id LIKE 'forbidden/%'").fetchall()
    assert len(rows) == 1
    _id, msg_type, state, outcome = rows[0]
    assert (msg_type, state) == ("test_echo", "finished")
    assert json.loads(outcome)["data"] == {"rejected": "forbidden", "user": "outsider"}
    assert queue_is_empty(broker, host.queue), "the refused request was not acknowledged"


def test_shutdown_and_prune_cache_are_the_host_users_own(host_factory, caller_for):
    host = host_factory().start()
    web = caller_for(host)
    for msg_type, payload in (("shutdown", {"reason": "bye"}), ("prune_cache", {})):
        answer = forbidden(web, web.send(msg_type, payload))
        assert answer["reason"] == f"forbidden: broker user 'webtier' may not call {msg_type}"
    # Still up and listening: the web tier's own work goes on.
    assert web.wait_event(web.send("test_echo", {"text": "still here"}))["ok"]
    assert host.proc is not None and host.proc.poll() is None

    own = caller_for(host, who="host")
    own.send("shutdown", {"reason": "the operator's own"})
    assert host.wait(20) == 100


def test_allow_users_opens_or_closes_control_capabilities(host_factory, caller_for):
    extra = {"capability.shutdown": {"allow_users": ["webtier"]},
             "capability.health_ping": {"allow_users": ["webtier", "opsagent"]}}
    host = host_factory(extra=extra).start()
    outsider = caller_for(host, who="outsider")
    rid = outsider.send("health_ping")
    assert outsider.wait_reply(lambda r: r.get("request_id") == rid)["code"] == "forbidden"
    web = caller_for(host)
    rid = web.send("health_ping")
    assert web.wait_reply(lambda r: r.get("request_id") == rid)["msg_type"] == "pong"
    web.send("shutdown", {"reason": "allowed by config"})
    assert host.wait(20) == 100


def test_a_message_the_broker_did_not_stamp_is_refused_where_a_list_applies(tmp_path):
    harness = Harness(tmp=tmp_path, config={"capability.prune_cache": {"allow_users": ["web"]}})
    try:
        unstamped = harness.send("prune_cache", {"dry_run": True}, broker_user=None)
        assert unstamped["code"] == "forbidden"
        assert "the broker did not say who sent this request" in unstamped["reason"]
        assert harness.send("prune_cache", {"dry_run": True}, broker_user="web")["ok"]
        # Where no list applies, an unstamped request is served as before.
        assert harness.ping()["msg_type"] == "pong"
    finally:
        harness.stop()


@pytest.mark.parametrize("value, message", [
    ('"webtier"', "expected a list of broker user names"),
    ('["*", "webtier"]', '"*" opens it to anyone; list no other names beside it'),
])
def test_a_bad_allow_list_stops_the_host_at_start(host_factory, value, message):
    host = host_factory()
    host.config.write_text(host.config.read_text()
                           + f"[capability.test_echo]\nallow_users = {value}\n")
    done = subprocess.run([*OPSAGENT, "--config", str(host.config), "run"], env=host.env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 78, done.stderr
    assert f"capability.test_echo.allow_users: {message}" in done.stderr


#: What each test broker says in its CONNECTED frame's ``server``.
SERVER = {"classic": "ActiveMQ/5.17.2",
          "artemis": "ActiveMQ-Artemis/2.40.0 ActiveMQ Artemis Messaging Engine"}


def test_selftest_lists_what_anyone_may_call_and_checks_stamping(host_factory, broker):
    host = host_factory(extra=ECHO_FOR_WEB).start()
    done = subprocess.run([*OPSAGENT, "--config", str(host.config), "selftest", "--live",
                           "--json"], env=host.env, capture_output=True, text=True, timeout=60)
    checks = {(c["subject"], c["check"]): c for c in json.loads(done.stdout)["checks"]}
    assert checks[("access", "test_echo")]["status"] == "ok"
    assert checks[("access", "test_echo")]["detail"] == "only broker user(s): webtier"
    assert checks[("access", "shutdown")]["detail"] == "only broker user(s): opsagent"
    assert checks[("access", "test_sleep")]["status"] == "warn"
    assert "anyone who can write to the queue" in checks[("access", "test_sleep")]["detail"]
    stamping = checks[("broker", "sender stamping")]
    assert stamping["status"] == "ok", stamping
    # Artemis too: its _AMQ_VALIDATED_USER reaches a STOMP client as JMSXUserID.
    assert stamping["detail"] == (f"{SERVER[broker['BROKER']]} stamps the sender "
                                  "(JMSXUserID: opsagent)")

    # A header the broker does not stamp proves nothing: Classic passes a client's
    # _AMQ_VALIDATED_USER through (the probe's forged value comes back); Artemis drops it
    # (nothing comes back).
    wrong = host.config.read_text().replace("[broker]\n", '[broker]\nuser_header = '
                                            '"_AMQ_VALIDATED_USER"\n')
    host.config.write_text(wrong)
    done = subprocess.run([*OPSAGENT, "--config", str(host.config), "selftest", "--live",
                           "--json"], env=host.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    checks = {(c["subject"], c["check"]): c for c in json.loads(done.stdout)["checks"]}
    stamping = checks[("broker", "sender stamping")]
    assert stamping["status"] == "fail"
    why = {"classic": "_AMQ_VALIDATED_USER says 'forged'",
           "artemis": "no _AMQ_VALIDATED_USER on the probe"}[broker["BROKER"]]
    assert f"is not stamping the sender ({why}" in stamping["detail"]


def test_shutdown_can_be_denied_in_config_and_health_ping_cannot(host_factory, caller_for):
    host = host_factory(extra={"capabilities": {"deny": ["shutdown"]}}).start()
    own = caller_for(host, who="host")
    refused = own.wait_event(own.send("shutdown", {"reason": "denied"}))
    assert refused["code"] == "unknown_msg_type"
    assert host.proc is not None and host.proc.poll() is None

    deaf = host_factory(extra={"capabilities": {"deny": ["health_ping"]}})
    done = subprocess.run([*OPSAGENT, "--config", str(deaf.config), "run"], env=deaf.env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 78
    assert "health_ping cannot be denied" in done.stderr
