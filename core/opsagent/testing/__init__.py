"""Testing kit for capability authors, registered as a pytest plugin (``pytest11``).

:class:`Harness` runs a real host -- real dispatch, journal, workers, isolation -- on
the in-memory transport, so a test sends a request and gets its terminal outcome
without a broker::

    def test_hello(opsagent_harness):
        h = opsagent_harness(modules=[my_plugin])
        answer = h.send("hello", {"name": "x"})
        assert answer["outcome"] == "ok"

Also here: :func:`declared` (or :func:`installed`, through its entry point),
:func:`make_job` and :func:`call_doer` to call a doer directly with a job like the
host's; :func:`structure`, :func:`config_from_table` and :func:`host_overrides` to read
input and configuration as the host reads them; :func:`start_job_process` to run a job
in a process of its own as the host does (its notes in a real journal,
:func:`journal_notes`); :class:`FakeCredentials` (fixture ``opsagent_credentials``),
loopback HTTP fakes (:class:`FakeServer`, fixture ``opsagent_http``; :class:`FakeMattermost`,
Mattermost's incoming webhooks), and
:func:`processes_with_env` to check that a killed job left no process behind.

With ``opsagent`` itself, this is all a capability's tests need: the host's other
modules are internal and may change.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points as entry_points_of
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from opsagent.host import config as configuration
from opsagent.host import plugins
from opsagent.host.config import ConfigError
from opsagent.host.daemon import Host
from opsagent.job import MemoryNotes, Notes
from opsagent.schema import InputError, json_schema, structure
from opsagent.testing.certs import Certificate, self_signed
from opsagent.testing.credentials import FakeCredentials
from opsagent.testing.http import FakeServer, Request, Response, hang
from opsagent.testing.jobs import (
    JobProcess,
    call_doer,
    config_from_table,
    declared,
    host_overrides,
    installed,
    journal_notes,
    make_job,
    start_job_process,
)
from opsagent.testing.mattermost import FakeMattermost
from opsagent.transport.memory import MemoryBroker, MemoryTransport


class Harness:
    """A host on an in-memory broker; requests in, terminal answers out.

    The broker stamps who sent each message, as an authenticating broker does: the host
    is logged in as :attr:`HOST_USER`, requests are sent as ``broker_user`` (default
    :attr:`CALLER_USER`), so ``allow_users`` can be tried here too.
    """

    HOST_USER = "harness-host"
    CALLER_USER = "harness-caller"

    def __init__(
        self,
        *,
        tmp: Path,
        modules: Iterable[ModuleType] = (),
        entry_points: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        raw: dict[str, Any] = {
            "host": {
                "instance": "harness",
                "cache_dir": str(tmp / "cache"),
                "state_dir": str(tmp / "state"),
                "drain_seconds": 5,
                "kill_grace_seconds": 1,
            },
            "broker": {"user": self.HOST_USER},
        }
        for section, values in (config or {}).items():
            if isinstance(values, list):
                raw[section] = values  # an array of tables ([[notify]])
            else:
                raw.setdefault(section, {}).update(values)
        tmp.mkdir(parents=True, exist_ok=True)
        cfg_path = tmp / "opsagent.toml"
        cfg_path.write_text(toml_text(raw))
        self.config = configuration.load(cfg_path)
        mods = [(m.__name__, m) for m in modules]
        if entry_points:
            self.registry = plugins.load(extra_modules=mods)
        else:
            # The host's own capabilities through its real entry point: registered under
            # any other distribution, health_ping and shutdown would be refused as reserved.
            builtin = [
                ep for ep in entry_points_of(group=plugins.GROUP) if ep.value == "opsagent.builtin"
            ]
            self.registry = plugins.load(entry_points_=builtin, extra_modules=mods)
        self.broker = MemoryBroker()
        self.transport = MemoryTransport(
            self.broker, self.config.broker.queue, user=self.config.broker.user
        )
        self.events: list[dict[str, Any]] = []
        self._answers: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.broker.subscribe_topic(self.config.broker.topic, self._on_event)
        self.reply_to = "/queue/harness.reply"
        self.host = Host(self.config, transport=self.transport, registry=self.registry)
        self._thread = threading.Thread(target=self._run, name="harness-host", daemon=True)
        self.exit_status: int | None = None
        self._thread.start()
        if not self.host.ready.wait(10):
            raise RuntimeError("harness host did not start")

    def _run(self) -> None:
        self.exit_status = self.host.run(install_signals=False)

    def _on_event(self, body: bytes, _headers: Any) -> None:
        event = json.loads(body)
        with self._cond:
            self.events.append(event)
            key = event.get("request_id") or event.get("job_id")
            if key:
                self._answers[key] = event
            self._cond.notify_all()

    def publish(
        self,
        msg_type: str,
        payload: dict[str, Any] | None = None,
        *,
        broker_user: str | None = CALLER_USER,
        **envelope: Any,
    ) -> str:
        """Publish as ``broker_user`` without waiting; returns the request id."""
        request_id = envelope.pop("request_id", None) or uuid.uuid4().hex
        body = {
            "msg_type": msg_type,
            "namespace": self.config.host.namespace,
            "request_id": request_id,
            **envelope,
            **(payload or {}),
        }
        self.broker.publish(self.config.broker.queue, json.dumps(body).encode(), user=broker_user)
        return request_id

    def publish_raw(self, body: bytes, *, broker_user: str | None = CALLER_USER) -> None:
        self.broker.publish(self.config.broker.queue, body, user=broker_user)

    def send(
        self,
        msg_type: str,
        payload: dict[str, Any] | None = None,
        *,
        timeout: float = 30.0,
        **envelope: Any,
    ) -> dict[str, Any]:
        """Publish a request and return its terminal event or rejection."""
        request_id = self.publish(msg_type, payload, **envelope)
        return self.wait_for(request_id, timeout)

    def wait_for(self, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self._answers, timeout):
                raise TimeoutError(f"no answer for request {request_id} within {timeout} s")
            return self._answers[request_id]

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        """A health_ping round trip through the host (answers go to ``reply_to``)."""
        got: list[dict[str, Any]] = []
        done = threading.Event()
        dest = f"/queue/harness.ping.{uuid.uuid4().hex}"

        def on_reply(body: bytes) -> None:
            got.append(json.loads(body))
            done.set()

        self.broker.subscribe_queue_callback(dest, on_reply)
        self.publish("health_ping", reply_to=dest)
        if not done.wait(timeout):
            raise TimeoutError("no pong")
        return got[0]

    def join(self, timeout: float = 30.0) -> None:
        """Wait until every accepted job has ended and nothing waits in the broker."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (
                self.broker.depth(self.config.broker.queue) == 0
                and not self.transport._unacked
                and self.host.ledger.idle.is_set()
            ):
                return
            time.sleep(0.01)
        raise TimeoutError(f"jobs still in flight after {timeout} s")

    def stop(self) -> int | None:
        self.host.stop()
        self._thread.join(30)
        return self.exit_status


def toml_text(raw: dict[str, Any]) -> str:
    """A TOML file of flat tables (``{section: {key: value}}``), for test configurations;
    a list of tables (``{"notify": [{...}, {...}]}``) is an array of tables."""
    lines = []
    for section, values in raw.items():
        for table in values if isinstance(values, list) else [values]:
            lines.append(f"[[{section}]]" if isinstance(values, list) else f"[{section}]")
            for key, value in table.items():
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def opsagent_harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """A factory of :class:`Harness` objects, stopped at the end of the test."""
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        h = Harness(tmp=tmp_path / f"h{len(made)}", **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def opsagent_credentials(tmp_path: Path) -> FakeCredentials:
    """Fake credential files for this test (see :class:`FakeCredentials`)."""
    return FakeCredentials(tmp_path / "credentials")


@pytest.fixture
def opsagent_http() -> Iterator[Callable[..., FakeServer]]:
    """A factory of started loopback :class:`~opsagent.testing.http.FakeServer` objects.

    ``opsagent_http(routes)`` takes what :class:`FakeServer` takes.  Every server is
    closed after the test, and a handler that raised fails the test: a fake that breaks
    is a broken test, not a service answering 500.
    """
    made: list[FakeServer] = []

    def make(*args: Any, **kwargs: Any) -> FakeServer:
        server = FakeServer(*args, **kwargs).start()
        made.append(server)
        return server

    yield make
    errors = []
    for server in made:
        server.close()
        errors += [repr(e) for e in server.errors]
    if errors:
        pytest.fail("a fake server's handler raised: " + "; ".join(errors))


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (a service a test
    needs, started by the project's scripts)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def processes_with_env(text: str) -> list[int]:
    """Pids of the processes (this one aside) whose environment holds ``text`` in a name
    or value: a job's children carry the paths of its cache and state directories, so
    after a job is killed ``processes_with_env(str(tmp_path)) == []`` checks that
    nothing it started is left.  Only processes of this user can be read; a process
    sees the environment it was started with (``/proc/PID/environ``)."""
    want = text.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if want in raw:
            found.append(int(entry))
    return found


__all__ = [
    "Certificate",
    "ConfigError",
    "FakeCredentials",
    "FakeMattermost",
    "FakeServer",
    "Harness",
    "InputError",
    "JobProcess",
    "MemoryNotes",
    "Notes",
    "Request",
    "Response",
    "call_doer",
    "config_from_table",
    "declared",
    "hang",
    "host_overrides",
    "installed",
    "journal_notes",
    "json_schema",
    "make_job",
    "opsagent_credentials",
    "opsagent_harness",
    "opsagent_http",
    "port_open",
    "processes_with_env",
    "start_job_process",
    "self_signed",
    "structure",
]
