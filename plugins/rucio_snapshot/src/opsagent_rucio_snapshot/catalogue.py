"""The production catalogue (PCS) REST API, as far as this capability uses it.

- ``GET  <base>/pcs/api/campaigns/`` -- campaigns with their ``lifecycle``;
- ``GET  <base>/pcs/api/prod-tasks/?campaign=<v>`` -- the requested tasks of a campaign;
- ``PATCH <base>/pcs/api/prod-tasks/<name>/`` with ``{"overrides": {...}}`` -- replace a
  task's overrides (this capability only changes their ``outputs`` key).

List answers may be a JSON array or a page ``{"results": [...], "next": <url>|null}``;
pages are followed.  The contract is written out in ``docs/rucio_snapshot.md``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import requests

API = "/pcs/api"
MAX_PAGES = 1000


class CatalogueError(Exception):
    """A catalogue request failed; the message says which request and why."""


class Catalogue:
    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | str = True,
        timeout: float = 30.0,
        remote_user: str | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.verify = verify
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "opsagent-rucio-snapshot"
        if remote_user:
            self.session.headers["X-Remote-User"] = remote_user

    def _request(
        self, method: str, url: str, params: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        shown = f"{url}?{urlencode(params)}" if params else url
        try:
            resp = self.session.request(
                method,
                url,
                params=params,
                verify=self.verify,
                timeout=self.timeout,
                allow_redirects=False,
                **kw,
            )
        except requests.RequestException as exc:
            raise CatalogueError(f"{method} {shown}: {type(exc).__name__}: {exc}") from exc
        if not 200 <= resp.status_code < 300:
            body = " ".join(resp.text.split())[:200]
            raise CatalogueError(f"{method} {shown}: HTTP {resp.status_code} {body}".rstrip())
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise CatalogueError(f"{method} {shown}: answer is not JSON") from None

    def _list(self, url: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        next_url: str | None = url
        for _ in range(MAX_PAGES):
            if next_url is None:
                return out
            page = self._request("GET", next_url, params=params)
            params = None  # a page's "next" already carries the query
            if isinstance(page, list):
                items, next_url = page, None
            elif isinstance(page, dict) and isinstance(page.get("results"), list):
                items, next_url = page["results"], page.get("next")
            else:
                raise CatalogueError(f"GET {url}: expected a list or a page with results")
            out.extend(i for i in items if isinstance(i, dict))
        raise CatalogueError(f"GET {url}: more than {MAX_PAGES} pages")

    def campaigns(self) -> list[dict[str, Any]]:
        return self._list(f"{self.base}{API}/campaigns/")

    def tasks(self, campaign: str) -> list[dict[str, Any]]:
        tasks = self._list(f"{self.base}{API}/prod-tasks/", {"campaign": campaign})
        for task in tasks:
            if not isinstance(task.get("name"), str) or not task["name"]:
                raise CatalogueError(f"GET prod-tasks of {campaign}: a task without a name")
        return tasks

    def replace_outputs(self, task: dict[str, Any], outputs: list[dict[str, Any]]) -> None:
        """PATCH the task's overrides with ``outputs`` replaced, other keys kept as read."""
        overrides = task.get("overrides")
        overrides = dict(overrides) if isinstance(overrides, dict) else {}
        overrides["outputs"] = outputs
        url = f"{self.base}{API}/prod-tasks/{quote(task['name'], safe='')}/"
        self._request("PATCH", url, json={"overrides": overrides})
