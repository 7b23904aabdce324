"""The monitor's two side channels of a task operation (LEGACY.md, Side channels).

- ``POST {monitor_url}/api/panda/task-operations/<operation_id>/state/`` with
  ``{status, diagnostic, observed_status, evidence}``: the operation's page reads it.
  Statuses the server takes: running, accepted, verified, unverified, failed, timeout.
- ``POST {monitor_url}/api/capcom/notices/ingest/`` with ``{source, severity, title,
  detail, url, dedup_key}``: one attempt each, no resend.

Both carry ``Authorization: Token <monitor_token>``.  A failed call is logged with what
failed and never changes the operation's outcome: PanDA did what it did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attrs
import requests

SOURCE = "swf-panda-operations"


@attrs.frozen
class Monitor:
    base_url: str
    token: str | None = attrs.field(repr=False)
    timeout: float
    link_base: str
    verify: bool | str = True
    log: Callable[[str], None] = print

    def _post(self, path: str, body: dict[str, Any], what: str) -> bool:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        try:
            resp = requests.post(
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            self.log(f"{what}: the monitor could not be reached ({type(exc).__name__})")
            return False
        if resp.status_code not in (200, 201):
            self.log(f"{what}: the monitor answered HTTP {resp.status_code}: {resp.text[:200]}")
            return False
        return True

    def state(
        self,
        operation_id: str | None,
        status: str,
        diagnostic: str = "",
        observed_status: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> bool:
        """Tell the operation's page its state; nothing without an ``operation_id``."""
        if not operation_id:
            return False
        body = {
            "status": status,
            "diagnostic": diagnostic,
            "observed_status": observed_status,
            "evidence": evidence or {},
        }
        path = f"/api/panda/task-operations/{quote(operation_id, safe='')}/state/"
        return self._post(path, body, f"state {status} of operation {operation_id}")

    def notice(
        self, *, severity: str, title: str, detail: str, url_path: str, dedup_key: str
    ) -> bool:
        body = {
            "source": SOURCE,
            "severity": severity,
            "title": title,
            "detail": detail,
            "url": self.link_base + url_path,
            "dedup_key": dedup_key,
        }
        return self._post("/api/capcom/notices/ingest/", body, f"Capcom notice {dedup_key}")
