"""A faithful fake of the PanDA server's ``/api/v1`` REST endpoints, on loopback.

It follows what panda-client 2.x sends (``pandaclient/Client.py``: the
``http_request_decorator`` endpoints and ``_HttpClient``) and how panda-server's
``api/v1`` answers (``file_server_api.py``, ``task_api.py``): every response is the
envelope ``{"success", "message", "data"}``; every request must carry ``Authorization:
Bearer <an accepted id token>`` and ``Origin: <vo>`` (OIDC), else 403.  POST bodies are
JSON (``json_out=True``), GET parameters are in the query string.

- ``POST file_server/validate_cache_file`` (``file_size``, ``checksum``): ``FOUND:<host>:
  <file>`` when this user uploaded a file of that size and CRC, else ``NOTFOUND``.
- ``POST file_server/upload_cache_file`` (multipart field ``file``): stores it; refuses to
  overwrite a name; the CRC is read from the gzip footer as the server does.
- ``POST task/submit`` (``task_parameters``, ``parent_tid``; ``Client.insertTaskParams``):
  a new task gets ``succeeded. new jediTaskID=<n>``; with ``uniqueTaskName`` a name this
  user already used is refused with code 2 (the wording of that refusal is assumed).
- ``GET task/get_tasks_detailed_info_since`` (``n_tasks``, optional ``since`` and
  ``filters``, a JSON object of JediTaskSpec attribute -> value): the caller's own tasks
  whose attributes equal the filter values, compared as strings, at most ``n_tasks``.
- ``POST task/pause`` and ``task/resume`` (``task_id``; ``Client.pauseTask`` /
  ``resumeTask``, output mode "extended"): ``success`` with the command registered, or
  ``success: false`` with a message (unknown task, irrelevant status).  JEDI applies a
  registered command asynchronously; here the status changes at once unless
  :attr:`FakePanda.apply_commands` is off (the read-back then does not change).
- ``POST task/retry`` (``task_id``, optional ``new_parameters``; ``Client.retryTask``,
  output mode "full"): ``data`` is the return code (0 registered, 2 not found, 4
  irrelevant status), ``message`` the diagnostic.
- ``POST task/increase_attempts`` (``task_id``, ``increase``;
  ``Client.increase_attempt_nr``): ``data`` 0 on success, 1 unknown task, 4 wrong
  parameter.
- ``GET task/get_status`` (``task_id``; ``Client.getTaskStatus``): ``data`` is the
  task's status string.

Failure modes, per endpoint name (``"task/pause"``...), in :attr:`FakePanda.failures`:
``"hang"`` (never answers), ``"drop"`` (closes the connection: a transport error), an
HTTP status (a proxy's error page), or ``(code, message)`` (the server's own refusal in
the envelope).
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from opsagent.testing.http import FakeServer, Request, Response, drop, hang
from opsagent.testing.oidc import TokenRejected, TokenVerifier

API = "/api/v1"


def envelope(success: bool, message: str = "", data: Any = None) -> dict[str, Any]:
    """The body every ``/api/v1`` answer has."""
    return {"success": success, "message": message, "data": data}


class FakePanda:
    """The PanDA server endpoints panda-client calls for submissions and task commands."""

    API = API

    def __init__(
        self,
        id_tokens: tuple[str, ...] = (),
        vo: str = "EIC.production",
        first_task_id: int = 41000,
        *,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.server = FakeServer()
        #: Tokens accepted as they are (test tokens with no real signature) ...
        self.id_tokens = set(id_tokens)
        #: ... or, as the real server does, any token whose signature verifies with the
        #: issuer's keys and which has not expired (:mod:`opsagent.testing.oidc`).
        self.verifier = verifier
        #: The bearer tokens of the requests the server accepted, in order.
        self.accepted_tokens: list[str] = []
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
        #: Endpoint name -> "hang" | "drop" | HTTP status | (code, message): see the module.
        self.failures: dict[str, Any] = {}
        #: Whether a registered pause/resume changes the status the read-back shows.
        self.apply_commands = True
        #: Called with each accepted task command (a test can kill something then).
        self.on_command: Callable[[str, int], None] | None = None
        self._lock = threading.Lock()
        s = self.server
        s.route("POST", f"{API}/file_server/validate_cache_file", self._validate)
        s.route("POST", f"{API}/file_server/upload_cache_file", self._upload)
        s.route("POST", f"{API}/task/submit", self._submit)
        s.route("GET", f"{API}/task/get_tasks_detailed_info_since", self._tasks_since)
        for name in ("pause", "resume"):
            s.route("POST", f"{API}/task/{name}", self._state_command(name))
        s.route("POST", f"{API}/task/retry", self._retry)
        s.route("POST", f"{API}/task/increase_attempts", self._increase)
        s.route("GET", f"{API}/task/get_status", self._status)

    # -- set-up and inspection ----------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        """The panda-client variables that point it at this server."""
        base = f"{self.url}/server/panda"
        return {
            "PANDA_URL": base,
            "PANDA_URL_SSL": base,
            "PANDACACHE_URL": base,
            "PANDAMON_URL": self.url,
            "PANDA_BEHIND_REAL_LB": "1",
        }

    def add_task(
        self, task_id: int, name: str, *, status: str = "running", user: str = "Ops Operator"
    ) -> dict[str, Any]:
        """A task PanDA already has (for task commands)."""
        task = {
            "jediTaskID": task_id,
            "user": user,
            "params": {"taskName": name},
            "status": status,
            "attempts": 0,
            "retries": [],
            "at": time.time(),
        }
        with self._lock:
            self.tasks.append(task)
            self.next_id = max(self.next_id, task_id + 1)
        return task

    def task(self, task_id: int) -> dict[str, Any] | None:
        with self._lock:
            for t in self.tasks:
                if t["jediTaskID"] == task_id:
                    return t
        return None

    def requests_to(self, endpoint: str, method: str = "POST") -> list[Request]:
        return self.server.requests_to(method, f"{API}/{endpoint}")

    @property
    def commands(self) -> list[Request]:
        """Every task command received (pause, resume, retry, increase_attempts), in order."""
        names = {f"{API}/task/{n}" for n in ("pause", "resume", "retry", "increase_attempts")}
        with self.server._lock:
            return [r for r in self.server.requests if r.method == "POST" and r.path in names]

    @property
    def submit_requests(self) -> list[Request]:
        return self.requests_to("task/submit")

    @property
    def lookup_requests(self) -> list[Request]:
        return self.requests_to("task/get_tasks_detailed_info_since", "GET")

    def __enter__(self) -> FakePanda:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    # -- common -------------------------------------------------------------------------

    def _user(self, req: Request) -> str | None:
        auth = req.header("Authorization") or ""
        if not auth.startswith("Bearer ") or req.header("Origin") != self.vo:
            return None
        token = auth[len("Bearer ") :]
        if token in self.id_tokens:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        elif self.verifier is not None:
            try:
                claims = self.verifier.verify(token)
            except TokenRejected:
                return None
        else:
            return None
        with self._lock:
            self.accepted_tokens.append(token)
        return str(claims["name"])

    def _denied(self) -> Response:
        return Response.json(envelope(False, "ERROR : token verification failed"), 403)

    def _failure(self, endpoint: str, req: Request) -> Response | None:
        planned = self.failures.get(endpoint)
        if planned is None:
            return None
        if planned == "hang":
            return hang(req)
        if planned == "drop":
            return drop(req)
        if isinstance(planned, int):
            return Response.text(f"<html>{planned} error</html>", planned, "text/html")
        code, message = planned
        return Response.json(envelope(False, message, code))

    def _task_id(self, req: Request) -> int | None:
        try:
            raw: Any = req.json()["task_id"] if req.method == "POST" else req.arg("task_id")
            return int(raw)
        except (KeyError, TypeError, ValueError):
            return None

    # -- submission ---------------------------------------------------------------------

    def _validate(self, req: Request) -> Response:
        user = self._user(req)
        if user is None:
            return self._denied()
        body = req.json()
        size, checksum = int(body["file_size"]), str(body["checksum"])
        with self._lock:
            for name, f in self.files.items():
                if (f["user"], f["size"], f["checksum"]) == (user, size, checksum):
                    return Response.json(envelope(True, f"FOUND:127.0.0.1:{name}"))
        return Response.json(envelope(False, "NOTFOUND"))

    def _upload(self, req: Request) -> Response:
        user = self._user(req)
        if user is None:
            return self._denied()
        failed = self._failure("file_server/upload_cache_file", req)
        if failed is not None:
            return failed
        filename, content = req.files()["file"]
        name = (filename or "").split("/")[-1]
        with self._lock:
            if name in self.files:
                return Response.json(envelope(False, "ERROR: cannot overwrite file"))
            checksum, _ = struct.unpack("II", content[-8:])
            self.files[name] = {
                "user": user,
                "size": len(content),
                "checksum": str(checksum),
                "content": content,
            }
        return Response.json(envelope(True))

    def _submit(self, req: Request) -> Response:
        user = self._user(req)
        if user is None:
            return self._denied()
        if self.submit_behaviour == "hang":
            return hang(req)
        if isinstance(self.submit_behaviour, tuple):
            code, message = self.submit_behaviour
            return Response.json(envelope(False, message, code))
        failed = self._failure("task/submit", req)
        if failed is not None:
            return failed
        params = req.json()["task_parameters"]
        with self._lock:
            if params.get("uniqueTaskName"):
                for t in self.tasks:
                    if t["user"] == user and t["params"]["taskName"] == params["taskName"]:
                        return Response.json(
                            envelope(False, f"task name {params['taskName']} is already used", 2)
                        )
            task_id = self.next_id
            self.next_id += 1
            self.tasks.append(
                {
                    "jediTaskID": task_id,
                    "user": user,
                    "params": params,
                    "status": "registered",
                    "attempts": 0,
                    "retries": [],
                    "at": time.time(),
                }
            )
        if self.hang_after_accept:
            return hang(req)
        message = self.accept_message.format(id=task_id)
        return Response.json(envelope(True, message, task_id))

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
            return Response.json(envelope(False, f"invalid parameters: {exc}"), 400)
        criteria = {"userName": user, **{k: str(v) for k, v in filters.items()}}
        found = []
        with self._lock:
            for t in self.tasks:
                record = {
                    "jediTaskID": t["jediTaskID"],
                    "taskName": t["params"]["taskName"],
                    "status": t["status"],
                    "userName": t["user"],
                    "prodSourceLabel": t["params"].get("prodSourceLabel"),
                    "vo": t["params"].get("vo"),
                }
                if t["at"] > floor and all(str(record.get(k)) == v for k, v in criteria.items()):
                    found.append(record)
        return Response.json(envelope(True, "", found[:n_tasks]))

    # -- task commands ------------------------------------------------------------------

    def _command(
        self, endpoint: str, req: Request
    ) -> tuple[dict[str, Any] | None, Response | None]:
        """The task a command names, or the response that ends it first."""
        if self._user(req) is None:
            return None, self._denied()
        failed = self._failure(endpoint, req)
        if failed is not None:
            return None, failed
        task_id = self._task_id(req)
        if task_id is None:
            return None, Response.json(envelope(False, "task_id must be an integer"), 400)
        task = self.task(task_id)
        if task is None:
            return None, Response.json(envelope(False, f"jediTaskID={task_id} not found", 2))
        return task, None

    def _accepted(self, name: str, task: dict[str, Any]) -> None:
        if self.on_command is not None:
            self.on_command(name, task["jediTaskID"])

    def _state_command(self, name: str) -> Callable[[Request], Response]:
        wanted = {"pause": "paused", "resume": "running"}[name]
        allowed = {
            "pause": {"running", "ready", "scouting", "registered", "pending"},
            "resume": {"paused"},
        }[name]

        def handle(req: Request) -> Response:
            task, answer = self._command(f"task/{name}", req)
            if task is None:
                assert answer is not None
                return answer
            with self._lock:
                if task["status"] not in allowed and task["status"] != wanted:
                    return Response.json(
                        envelope(False, f"status={task['status']} is irrelevant for {name}", 4)
                    )
                if self.apply_commands:
                    task["status"] = wanted
            self._accepted(name, task)
            return Response.json(envelope(True, f"command={name} is registered", 0))

        return handle

    def _retry(self, req: Request) -> Response:
        task, answer = self._command("task/retry", req)
        if task is None:
            assert answer is not None
            return answer
        body = req.json()
        with self._lock:
            if task["status"] not in ("finished", "failed", "exhausted", "aborted", "broken"):
                return Response.json(
                    envelope(
                        False,
                        f"jediTaskID={task['jediTaskID']} status={task['status']} "
                        "is irrelevant for retry",
                        4,
                    )
                )
            task["retries"].append(body.get("new_parameters"))
            task["status"] = "ready"
        self._accepted("retry", task)
        return Response.json(envelope(True, "command=retry is registered", 0))

    def _increase(self, req: Request) -> Response:
        task, answer = self._command("task/increase_attempts", req)
        if task is None:
            assert answer is not None
            return answer
        try:
            increase = int(req.json()["increase"])
        except (KeyError, TypeError, ValueError):
            increase = -1
        if increase < 0:
            return Response.json(envelope(False, "wrong parameter: increase", 4))
        with self._lock:
            task["attempts"] += increase
        self._accepted("increase_attempts", task)
        return Response.json(envelope(True, f"increased attemptNr by {increase}", 0))

    def _status(self, req: Request) -> Response:
        if self._user(req) is None:
            return self._denied()
        failed = self._failure("task/get_status", req)
        if failed is not None:
            return failed
        task_id = self._task_id(req)
        task = self.task(task_id) if task_id is not None else None
        if task is None:
            return Response.json(envelope(False, f"jediTaskID={task_id} not found"))
        return Response.json(envelope(True, "", task["status"]))
