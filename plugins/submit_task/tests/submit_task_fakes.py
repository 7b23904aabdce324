"""Faithful fakes of the two services a submission talks to, on loopback.

FakeCatalogue follows the PCS REST API of swf-monitor (``src/pcs/api_views.py``,
``services.prodtask_record_submission``, ``monitor_app.middleware.TunnelAuthentication``):

- ``GET /pcs/api/prod-tasks/command/?name=&fmt=panda``: 400 without ``name`` or with an
  unknown ``fmt``, 404 ``{"detail": "No task named '<n>'"}``, else the command as
  ``text/plain``.
- ``GET /pcs/api/prod-tasks/<name>/``: the ProdTask record (``panda_task_id`` included),
  readable without authentication; 404 for an unknown name.
- ``POST /pcs/api/prod-tasks/record-submission/?name=``: needs an authenticated user --
  ``X-Remote-User`` is trusted from localhost (a request without it is the generic
  ``swf-remote-proxy`` user), ``Authorization: Token <t>`` otherwise; idempotent for the
  recorded id, 409 for a different one, 400 for a non-integer id.  The user who recorded
  is kept in ``recorded_by`` so tests can check the owner was passed on.

FakePanda follows the PanDA server's ``/api/v1`` endpoints that ``prun`` calls (panda-
client 2.x ``Client.putFile`` and ``Client.insertTaskParams``; panda-server
``api/v1/file_server_api.py`` and ``task_api.py``).  Every response is the server's
envelope ``{"success", "message", "data"}``; every request must carry ``Authorization:
Bearer <an accepted id token>`` and ``Origin: <vo>``:

- ``POST file_server/validate_cache_file`` (JSON ``file_size``, ``checksum``): ``FOUND:<host>:
  <file>`` when this user uploaded a file of that size and CRC, else ``NOTFOUND``.
- ``POST file_server/upload_cache_file`` (multipart field ``file``): stores it; refuses to
  overwrite a name; the CRC is read from the gzip footer as the server does.
- ``POST task/submit`` (JSON ``task_parameters``, ``parent_tid``): a new task gets
  ``succeeded. new jediTaskID=<n>``; with ``uniqueTaskName`` a name this user already
  used is refused with code 2 (the wording of that refusal is assumed).
- ``GET task/get_tasks_detailed_info_since`` (query ``n_tasks``, optional ``since`` and
  ``filters``, a JSON object of JediTaskSpec attribute -> value; panda-client 2.x
  ``Client.get_tasks_detailed_info_since``): the caller's own tasks (the server seeds
  its criteria with the caller's DN, ``userName``) whose attributes equal the filter
  values, compared as strings, at most ``n_tasks`` of them; ``data`` is a list of task
  records (``jediTaskID``, ``taskName``, ``status``, ``userName``, ...).  Without
  ``since`` tasks of any age are returned.  The server's handling of ``|`` in a filter
  value (a regular expression, applied after truncation) is not faked.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from typing import Any

from opsagent.testing import FakeServer, Request, Response, hang


class FakeCatalogue:
    """The PCS prod-task endpoints, with failure injection for record-submission."""

    def __init__(self, *, trust_localhost: bool = True, tokens: tuple[str, ...] = ()) -> None:
        self.server = FakeServer()
        self.tasks: dict[str, dict[str, Any]] = {}
        self.trust_localhost = trust_localhost
        self.tokens = set(tokens)
        #: What the next record-submission requests get instead of the real behaviour:
        #: an HTTP status, or "hang".  Consumed one per request.
        self.record_plan: list[int | str] = []
        self.record_seen = threading.Event()
        self._lock = threading.Lock()
        s = self.server
        s.route("GET", "/pcs/api/prod-tasks/command/", self._command)
        s.route("POST", "/pcs/api/prod-tasks/record-submission/", self._record)
        s.route("GET", "/pcs/api/prod-tasks/<name>/", self._detail)

    @property
    def url(self) -> str:
        return self.server.url

    def add_task(
        self,
        name: str,
        command: str,
        *,
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

    def __enter__(self) -> FakeCatalogue:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    # -- endpoints --------------------------------------------------------------------

    def _command(self, req: Request) -> Response:
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
        if fmt != "panda":
            return Response.json({"detail": f"fmt {fmt} is not faked"}, 501)
        return Response.text(task["panda_command"], content_type="text/plain")

    def _detail(self, req: Request) -> Response:
        task = self.tasks.get(req.params["name"])
        if task is None:
            return Response.json({"detail": f"No task {req.params['name']!r}"}, 404)
        return Response.json({k: v for k, v in task.items() if k != "recorded_by"})

    def _user(self, req: Request) -> str | None:
        if self.trust_localhost and req.client == "127.0.0.1":
            return (req.header("X-Remote-User") or "").strip() or "swf-remote-proxy"
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
            incoming = int(req.json().get("jedi_task_id"))
        except (TypeError, ValueError, AttributeError):
            return Response.json({"detail": "jedi_task_id must be an integer"}, 400)
        with self._lock:
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
        return Response.json(task)


def _envelope(success: bool, message: str = "", data: Any = None) -> dict[str, Any]:
    return {"success": success, "message": message, "data": data}


class FakePanda:
    """The PanDA server endpoints prun calls during a submission."""

    API = "/api/v1"

    def __init__(
        self, id_tokens: tuple[str, ...], vo: str = "EIC.production", first_task_id: int = 41000
    ) -> None:
        self.server = FakeServer()
        self.id_tokens = set(id_tokens)
        self.vo = vo
        self.files: dict[str, dict[str, Any]] = {}
        self.tasks: list[dict[str, Any]] = []
        self.next_id = first_task_id
        #: Set to "hang" to make task/submit never answer, or to a (code, message) pair
        #: to make it refuse.
        self.submit_behaviour: str | tuple[int, str] | None = None
        #: Message for an accepted task; ``{id}`` is replaced by the new jediTaskID.
        self.accept_message = "succeeded. new jediTaskID={id}"
        #: Set to ``True`` to register an accepted task and then never answer (the client
        #: dies waiting: PanDA has the task, nobody saw its id).
        self.hang_after_accept = False
        #: Set to a :class:`Response` to make task look-ups fail with it.
        self.lookup_failure: Response | None = None
        self._lock = threading.Lock()
        s, api = self.server, self.API
        s.route("POST", f"{api}/file_server/validate_cache_file", self._validate)
        s.route("POST", f"{api}/file_server/upload_cache_file", self._upload)
        s.route("POST", f"{api}/task/submit", self._submit)
        s.route("GET", f"{api}/task/get_tasks_detailed_info_since", self._tasks_since)

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        """The panda-client variables that point prun at this server."""
        base = f"{self.url}/server/panda"
        return {
            "PANDA_URL": base,
            "PANDA_URL_SSL": base,
            "PANDACACHE_URL": base,
            "PANDAMON_URL": self.url,
            "PANDA_BEHIND_REAL_LB": "1",
        }

    @property
    def submit_requests(self) -> list[Request]:
        return self.server.requests_to("POST", f"{self.API}/task/submit")

    @property
    def lookup_requests(self) -> list[Request]:
        return self.server.requests_to("GET", f"{self.API}/task/get_tasks_detailed_info_since")

    def __enter__(self) -> FakePanda:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    # -- endpoints --------------------------------------------------------------------

    def _user(self, req: Request) -> str | None:
        auth = req.header("Authorization") or ""
        if not auth.startswith("Bearer ") or req.header("Origin") != self.vo:
            return None
        token = auth[len("Bearer ") :]
        if token not in self.id_tokens:
            return None
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["name"])

    def _denied(self) -> Response:
        return Response.json(_envelope(False, "ERROR : token verification failed"), 403)

    def _validate(self, req: Request) -> Response:
        user = self._user(req)
        if user is None:
            return self._denied()
        body = req.json()
        size, checksum = int(body["file_size"]), str(body["checksum"])
        with self._lock:
            for name, f in self.files.items():
                if (f["user"], f["size"], f["checksum"]) == (user, size, checksum):
                    return Response.json(_envelope(True, f"FOUND:127.0.0.1:{name}"))
        return Response.json(_envelope(False, "NOTFOUND"))

    def _upload(self, req: Request) -> Response:
        user = self._user(req)
        if user is None:
            return self._denied()
        filename, content = req.files()["file"]
        name = (filename or "").split("/")[-1]
        with self._lock:
            if name in self.files:
                return Response.json(_envelope(False, "ERROR: cannot overwrite file"))
            checksum, _ = struct.unpack("II", content[-8:])
            self.files[name] = {
                "user": user,
                "size": len(content),
                "checksum": str(checksum),
                "content": content,
            }
        return Response.json(_envelope(True))

    def _submit(self, req: Request) -> Response:
        user = self._user(req)
        if user is None:
            return self._denied()
        if self.submit_behaviour == "hang":
            return hang(req)
        if isinstance(self.submit_behaviour, tuple):
            code, message = self.submit_behaviour
            return Response.json(_envelope(False, message, code))
        params = req.json()["task_parameters"]
        with self._lock:
            if params.get("uniqueTaskName"):
                for t in self.tasks:
                    if t["user"] == user and t["params"]["taskName"] == params["taskName"]:
                        return Response.json(
                            _envelope(False, f"task name {params['taskName']} is already used", 2)
                        )
            task_id = self.next_id
            self.next_id += 1
            self.tasks.append(
                {"jediTaskID": task_id, "user": user, "params": params, "at": time.time()}
            )
        if self.hang_after_accept:
            return hang(req)
        message = self.accept_message.format(id=task_id)
        return Response.json(_envelope(True, message, task_id))

    def _tasks_since(self, req: Request) -> Response:
        user = self._user(req)
        if user is None:
            return self._denied()
        if self.lookup_failure is not None:
            return self.lookup_failure
        try:
            n_tasks = int(req.arg("n_tasks") or 500)
            filters = json.loads(req.arg("filters") or "{}")
            since = req.arg("since")
            floor = time.mktime(time.strptime(since, "%Y-%m-%d %H:%M:%S")) if since else 0.0
        except ValueError as exc:
            return Response.json(_envelope(False, f"invalid parameters: {exc}"), 400)
        criteria = {"userName": user, **{k: str(v) for k, v in filters.items()}}
        found = []
        with self._lock:
            for t in self.tasks:
                record = {
                    "jediTaskID": t["jediTaskID"],
                    "taskName": t["params"]["taskName"],
                    "status": "registered",
                    "userName": t["user"],
                    "prodSourceLabel": t["params"].get("prodSourceLabel"),
                    "vo": t["params"].get("vo"),
                }
                if t["at"] > floor and all(str(record.get(k)) == v for k, v in criteria.items()):
                    found.append(record)
        return Response.json(_envelope(True, "", found[:n_tasks]))
