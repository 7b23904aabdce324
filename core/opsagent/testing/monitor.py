"""A faithful fake of the monitor (swf-monitor) endpoints capabilities call, on loopback.

The production catalogue PCS (``src/pcs/api_views.py``,
``services.prodtask_record_submission``, ``monitor_app.middleware.TunnelAuthentication``):

- ``GET /pcs/api/prod-tasks/command/?name=&fmt=panda|evgen[&panda_tasks_id=]``: 400
  without ``name`` or with an unknown ``fmt``, 404 ``{"detail": "No task named '<n>'"}``,
  else the prun command as ``text/plain`` (``panda``) or the EVGEN submission spec as
  JSON (``evgen``).
- ``GET /pcs/api/prod-tasks/<name>/``: the ProdTask record (``panda_task_id`` included),
  readable without authentication; 404 for an unknown name.
- ``POST /pcs/api/prod-tasks/record-submission/?name=``: needs an authenticated user --
  ``X-Remote-User`` is trusted from localhost (a request without it is the generic
  ``swf-remote-proxy`` user), ``Authorization: Token <t>`` otherwise; idempotent for the
  recorded id, 409 for a different one, 400 for a non-integer id.  The user who recorded
  is kept in ``recorded_by``; the whole body in ``record_bodies``.
- ``POST /pcs/api/prod-tasks/record-submission-failure/?name=`` with
  ``{"panda_tasks_id", "reason"}``: kept in ``failures``.

The monitor's side channels (``Authorization: Token <t>`` required, else 401):

- ``POST /api/panda/task-operations/<operation_id>/state/`` with ``{status, diagnostic,
  observed_status, evidence}``; ``status`` must be one of ``running, accepted, verified,
  unverified, failed, timeout`` (else 400, as ``panda/operations.py`` checks).
- ``POST /api/capcom/notices/ingest/`` with ``{source, severity, title, detail?, url,
  dedup_key}``; ``severity`` ``info`` or ``warning``.

And what a host with ``[monitor] enabled`` posts besides, without auth: heartbeats and
subscriber records (answered, not kept), action records to ``/api/logs/`` (kept:
:meth:`FakeMonitor.action_records`).

:attr:`FakeMonitor.calls` lists the side-channel POSTs in the order they arrived, so a
test asserts their order and bodies.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from opsagent.testing.http import FakeServer, Request, Response, hang

STATES = frozenset({"running", "accepted", "verified", "unverified", "failed", "timeout"})


@attrs.frozen
class Call:
    """One side-channel POST: ``kind`` is ``state``, ``notice`` or ``log``."""

    kind: str
    body: dict[str, Any]
    operation_id: str | None = None
    received: float = 0.0


class FakeMonitor:
    """The PCS prod-task endpoints and the monitor's task-operation and Capcom endpoints."""

    def __init__(self, *, trust_localhost: bool = True, tokens: tuple[str, ...] = ()) -> None:
        self.server = FakeServer()
        self.tasks: dict[str, dict[str, Any]] = {}
        self.trust_localhost = trust_localhost
        self.tokens = set(tokens)
        #: What the next record-submission requests get instead of the real behaviour:
        #: an HTTP status, or "hang".  Consumed one per request.
        self.record_plan: list[int | str] = []
        self.record_seen = threading.Event()
        #: What the command endpoint answers instead: an HTTP status, or "hang".
        self.command_failure: int | str | None = None
        self.record_bodies: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        s = self.server
        s.route("GET", "/pcs/api/prod-tasks/command/", self._command)
        s.route("POST", "/pcs/api/prod-tasks/record-submission/", self._record)
        s.route("POST", "/pcs/api/prod-tasks/record-submission-failure/", self._record_failure)
        s.route("GET", "/pcs/api/prod-tasks/<name>/", self._detail)
        s.route("POST", "/api/panda/task-operations/<operation_id>/state/", self._state)
        s.route("POST", "/api/capcom/notices/ingest/", self._notice)
        # What a host with [monitor] enabled posts besides: heartbeats, action records.
        s.route("POST", "/api/systemagents/heartbeat/", Response.json({"ok": True}, 201))
        s.route("POST", "/api/subscribers/", Response.json({"ok": True}, 201))
        s.route("POST", "/api/logs/", self._log)

    @property
    def url(self) -> str:
        return self.server.url

    def add_task(
        self,
        name: str,
        command: str = "",
        *,
        evgen: dict[str, Any] | None = None,
        panda_task_id: int | None = None,
        status: str = "ready",
        created_by: str = "alice",
    ) -> dict[str, Any]:
        task = {
            "id": len(self.tasks) + 1,
            "name": name,
            "description": "",
            "status": status,
            "panda_command": command,
            "evgen_spec": evgen,
            "panda_task_id": panda_task_id,
            "condor_cluster_id": None,
            "created_by": created_by,
            "recorded_by": None,
        }
        self.tasks[name] = task
        return task

    def requests(self, method: str, path: str) -> list[Request]:
        return self.server.requests_to(method, path)

    @property
    def record_requests(self) -> list[Request]:
        return self.requests("POST", "/pcs/api/prod-tasks/record-submission/")

    @property
    def command_requests(self) -> list[Request]:
        return self.requests("GET", "/pcs/api/prod-tasks/command/")

    def states(self, operation_id: str) -> list[Any]:
        """The statuses posted for one operation, in order."""
        with self._lock:
            return [c.body.get("status") for c in self.calls if c.operation_id == operation_id]

    @property
    def notices(self) -> list[dict[str, Any]]:
        with self._lock:
            return [c.body for c in self.calls if c.kind == "notice"]

    def __enter__(self) -> FakeMonitor:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    # -- PCS ----------------------------------------------------------------------------

    def _command(self, req: Request) -> Response:
        if self.command_failure == "hang":
            return hang(req)
        if isinstance(self.command_failure, int):
            return Response.json({"detail": "planned failure"}, self.command_failure)
        name = req.arg("name")
        fmt = (req.arg("fmt") or "").lower()
        if not name:
            return Response.json({"detail": "Missing ?name="}, 400)
        if fmt not in ("condor", "panda", "jedi", "evgen", "dump"):
            return Response.json(
                {"detail": "fmt must be one of: condor, panda, jedi, evgen, dump"}, 400
            )
        task = self.tasks.get(name)
        if task is None:
            return Response.json({"detail": f"No task named '{name}'"}, 404)
        if fmt == "evgen" and task["evgen_spec"] is not None:
            return Response.json(task["evgen_spec"])
        if fmt != "panda":
            return Response.json({"detail": f"fmt {fmt} is not faked for {name}"}, 501)
        return Response.text(task["panda_command"], content_type="text/plain")

    def _detail(self, req: Request) -> Response:
        task = self.tasks.get(req.params["name"])
        if task is None:
            return Response.json({"detail": f"No task {req.params['name']!r}"}, 404)
        hidden = ("recorded_by", "evgen_spec")
        return Response.json({k: v for k, v in task.items() if k not in hidden})

    def _user(self, req: Request) -> str | None:
        if self.trust_localhost and req.client == "127.0.0.1":
            return (req.header("X-Remote-User") or "").strip() or "swf-remote-proxy"
        return self._token_user(req)

    def _token_user(self, req: Request) -> str | None:
        auth = req.header("Authorization") or ""
        if auth.startswith("Token ") and auth[6:] in self.tokens:
            return "token-user"
        return None

    def _record(self, req: Request) -> Response:
        self.record_seen.set()
        with self._lock:
            planned = self.record_plan.pop(0) if self.record_plan else None
        if planned == "hang":
            return hang(req)
        if isinstance(planned, int):
            return Response.json({"detail": f"planned failure {planned}"}, planned)
        user = self._user(req)
        if user is None:
            return Response.json({"detail": "Authentication credentials were not provided."}, 403)
        name = req.arg("name")
        if not name:
            return Response.json({"detail": "Missing ?name="}, 400)
        task = self.tasks.get(name)
        if task is None:
            return Response.json({"detail": f"No task named '{name}'"}, 404)
        try:
            body = req.json()
            incoming = int(body.get("jedi_task_id"))
        except (TypeError, ValueError, AttributeError):
            return Response.json({"detail": "jedi_task_id must be an integer"}, 400)
        with self._lock:
            self.record_bodies.append(body)
            if task["panda_task_id"] is not None:
                if task["panda_task_id"] == incoming:
                    return Response.json(task)
                return Response.json(
                    {
                        "detail": f"Task already records panda_task_id="
                        f"{task['panda_task_id']}, cannot overwrite "
                        f"with {incoming}."
                    },
                    409,
                )
            task.update(panda_task_id=incoming, status="submitted", recorded_by=user)
        return Response.json({k: v for k, v in task.items() if k != "evgen_spec"})

    def _record_failure(self, req: Request) -> Response:
        if self._user(req) is None:
            return Response.json({"detail": "Authentication credentials were not provided."}, 403)
        try:
            body = req.json()
        except ValueError:
            return Response.json({"detail": "expected JSON"}, 400)
        if not isinstance(body, dict) or not body.get("panda_tasks_id"):
            return Response.json({"detail": "panda_tasks_id is required"}, 400)
        with self._lock:
            self.failures.append({"name": req.arg("name"), **body})
        return Response.json({"ok": True})

    # -- side channels ------------------------------------------------------------------

    def _state(self, req: Request) -> Response:
        if self._token_user(req) is None:
            return Response.json({"detail": "Invalid token."}, 401)
        try:
            body = req.json()
        except ValueError:
            return Response.json({"detail": "expected JSON"}, 400)
        if not isinstance(body, dict) or body.get("status") not in STATES:
            return Response.json({"detail": f"invalid status {body!r}"[:200]}, 400)
        with self._lock:
            self.calls.append(Call("state", body, req.params["operation_id"], req.received))
        return Response.json({"id": req.params["operation_id"], "status": body["status"]})

    def action_records(self) -> list[dict[str, Any]]:
        """The bodies of the action records posted to ``/api/logs/`` (no auth, as the
        old agent's)."""
        with self._lock:
            return [c.body for c in self.calls if c.kind == "log"]

    def _log(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return Response.json({"detail": "expected JSON"}, 400)
        with self._lock:
            self.calls.append(Call("log", body, None, req.received))
        return Response.json({"id": len(self.calls)}, 201)

    def _notice(self, req: Request) -> Response:
        if self._token_user(req) is None:
            return Response.json({"detail": "Invalid token."}, 401)
        try:
            body = req.json()
        except ValueError:
            return Response.json({"detail": "expected JSON"}, 400)
        missing = [k for k in ("source", "severity", "title", "url", "dedup_key") if k not in body]
        if missing or body.get("severity") not in ("info", "warning"):
            return Response.json({"detail": f"missing {missing} or bad severity"}, 400)
        with self._lock:
            self.calls.append(Call("notice", body, None, req.received))
        return Response.json({"ok": True})


#: The name submit_task's tests use: the same server, seen as the catalogue.
FakeCatalogue = FakeMonitor
