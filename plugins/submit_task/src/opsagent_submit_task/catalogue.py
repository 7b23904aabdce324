"""The production catalogue (PCS) as this capability uses it: three calls, all bounded.

- ``GET  /pcs/api/prod-tasks/<name>/`` -- the task record; its ``panda_task_id`` says
  whether the task was already submitted (the ProdTask detail route of the PCS REST API,
  readable by anyone, keyed by the composed task name).
- ``GET  /pcs/api/prod-tasks/command/?name=<name>&fmt=panda`` -- the prun command,
  ``text/plain``.
- ``POST /pcs/api/prod-tasks/record-submission/?name=<name>`` with JSON
  ``{"jedi_task_id": <int>}`` -- idempotent for the same id, 409 for another one.
- For ``submit_evgen_task``: ``GET .../command/?name=&fmt=evgen[&panda_tasks_id=]`` (the
  EVGEN spec, JSON) and ``POST .../record-submission-failure/?name=`` with
  ``{"panda_tasks_id", "reason"}``.

Requests carry ``X-Remote-User: <owner>`` (trusted by the monitor from localhost only)
and, when the ``pcs_token`` credential is configured, ``Authorization: Token <token>``.
Neither ever appears in a reason or a log line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attrs
import requests
from opsagent import retried

#: The longest command text accepted (a prun line is a few hundred bytes).
MAX_COMMAND_BYTES = 64 * 1024
#: The longest EVGEN spec accepted (its manifest has a row per job).
MAX_SPEC_BYTES = 16 * 1024 * 1024
_DETAIL_CHARS = 300


class CatalogueError(Exception):
    """A catalogue call that failed; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, status: int | None = None, retry: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retry = retry


def _detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
        text = str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        text = resp.text
    text = " ".join(text.split())
    return text[:_DETAIL_CHARS] + ("..." if len(text) > _DETAIL_CHARS else "")


@attrs.frozen
class Catalogue:
    """A client for one monitor base URL; ``owner`` and ``token`` authenticate writes."""

    base_url: str
    timeout: float
    owner: str | None = None
    token: str | None = attrs.field(default=None, repr=False)
    verify: bool | str = True

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.owner:
            headers["X-Remote-User"] = self.owner
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        return headers

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        url = self.base_url + path
        try:
            return requests.request(
                method,
                url,
                headers=self._headers(),
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
                **kwargs,
            )
        except requests.Timeout:
            raise CatalogueError(
                f"{what}: no answer from {url} within {self.timeout:g} s", retry=True
            ) from None
        except requests.RequestException as exc:
            raise CatalogueError(
                f"{what}: cannot reach {url}: {type(exc).__name__}", retry=True
            ) from None

    def panda_task_id(self, task_name: str) -> int | None:
        """The PanDA id the catalogue already records for the task, or ``None``."""
        what = f"asking the catalogue whether {task_name} was already submitted"
        resp = self._call("GET", f"/pcs/api/prod-tasks/{quote(task_name, safe='')}/", what)
        if resp.status_code == 404:
            raise CatalogueError(f"the catalogue has no task named {task_name!r}", status=404)
        if resp.status_code != 200:
            raise CatalogueError(
                f"{what}: HTTP {resp.status_code}: {_detail(resp)}",
                status=resp.status_code,
                retry=resp.status_code >= 500,
            )
        try:
            record = resp.json()
        except ValueError:
            raise CatalogueError(f"{what}: the answer is not JSON") from None
        if not isinstance(record, dict) or "panda_task_id" not in record:
            raise CatalogueError(f"{what}: the task record has no panda_task_id field")
        value = record["panda_task_id"]
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
            raise CatalogueError(f"{what}: panda_task_id is {value!r}, not an id")
        return int(value)

    def command(self, task_name: str) -> str:
        """The task's prun command line (``text/plain``)."""
        what = f"fetching the prun command of {task_name}"
        resp = self._call(
            "GET",
            "/pcs/api/prod-tasks/command/",
            what,
            params={"name": task_name, "fmt": "panda"},
            stream=True,
        )
        with resp:
            if resp.status_code != 200:
                raise CatalogueError(
                    f"{what}: HTTP {resp.status_code}: {_detail(resp)}", status=resp.status_code
                )
            ctype = resp.headers.get("Content-Type", "")
            if not ctype.startswith("text/plain"):
                raise CatalogueError(f"{what}: expected text/plain, got {ctype or 'no type'}")
            body = b""
            for chunk in resp.iter_content(8192):
                body += chunk
                if len(body) > MAX_COMMAND_BYTES:
                    raise CatalogueError(f"{what}: longer than {MAX_COMMAND_BYTES} bytes")
        # Django sends text/plain without a charset; requests would then assume
        # ISO-8859-1.  The catalogue writes UTF-8 unless it says otherwise.
        charset = "utf-8"
        for param in ctype.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            raise CatalogueError(f"{what}: the text is not valid {charset}") from None

    def evgen_spec(self, task_name: str, panda_tasks_id: str | None = None) -> Any:
        """The task's EVGEN submission spec (``fmt=evgen``, JSON), parsed, unchecked."""
        what = f"fetching the EVGEN spec of {task_name}"
        params = {"name": task_name, "fmt": "evgen"}
        if panda_tasks_id:
            params["panda_tasks_id"] = panda_tasks_id
        resp = self._call("GET", "/pcs/api/prod-tasks/command/", what, params=params, stream=True)
        with resp:
            if resp.status_code != 200:
                raise CatalogueError(
                    f"{what}: HTTP {resp.status_code}: {_detail(resp)}",
                    status=resp.status_code,
                    retry=resp.status_code >= 500,
                )
            body = b""
            for chunk in resp.iter_content(65536):
                body += chunk
                if len(body) > MAX_SPEC_BYTES:
                    raise CatalogueError(f"{what}: longer than {MAX_SPEC_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise CatalogueError(f"{what}: the answer is not JSON") from None

    def record_failure(self, task_name: str, panda_tasks_id: str, reason: str) -> None:
        """Tell the catalogue a submission failed before PanDA gave an id."""
        what = f"recording the failed submission of {task_name}"
        resp = self._call(
            "POST",
            "/pcs/api/prod-tasks/record-submission-failure/",
            what,
            params={"name": task_name},
            json={"panda_tasks_id": panda_tasks_id, "reason": reason[:2000]},
        )
        if resp.status_code not in (200, 201):
            raise CatalogueError(f"{what}: HTTP {resp.status_code}: {_detail(resp)}")

    def record(
        self, task_name: str, jedi_task_id: int, extra: dict[str, Any] | None = None
    ) -> None:
        """Record the submission once; :class:`CatalogueError` says whether to retry.
        ``extra``: more fields of the body (``panda_tasks_id``, ``panda_task_name``...)."""
        what = f"recording jediTaskID {jedi_task_id} for {task_name}"
        resp = self._call(
            "POST",
            "/pcs/api/prod-tasks/record-submission/",
            what,
            params={"name": task_name},
            json={"jedi_task_id": jedi_task_id, **(extra or {})},
        )
        if resp.status_code == 200:
            return
        status = resp.status_code
        raise CatalogueError(
            f"{what}: HTTP {status}: {_detail(resp)}",
            status=status,
            retry=status >= 500 or status == 429,
        )


def record_with_retries(
    record: Callable[[], None],
    backoffs: list[float],
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> list[CatalogueError]:
    """Call ``record`` until it succeeds, up to ``len(backoffs) + 1`` tries.

    Returns ``[]`` on success, else the failure of each try, in order.  A failure that retrying
    cannot fix (a 4xx such as 409, 403) ends the tries at once.
    """
    failures: list[CatalogueError] = []

    def failed(attempt: int, exc: Exception) -> None:
        if isinstance(exc, CatalogueError):
            failures.append(exc)
            if log is not None:
                log(f"record try {attempt} failed: {exc}")

    try:
        retried(
            record,
            backoffs,
            transient=lambda exc: isinstance(exc, CatalogueError) and exc.retry,
            on_failure=failed,
            sleep=sleep,
        )
    except CatalogueError:
        return failures
    return []
