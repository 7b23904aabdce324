"""The production catalogue (PCS) REST API, as far as this capability uses it.

- ``GET  <base>/pcs/api/campaigns/`` -- campaigns with their ``lifecycle``;
- ``GET  <base>/pcs/api/prod-tasks/?campaign=<v>`` -- the requested tasks of a campaign;
- ``PATCH <base>/pcs/api/prod-tasks/<name>/`` with ``{"overrides": {...}}`` -- replace a
  task's overrides (this capability only changes their ``outputs`` key);
- ``GET  <base>/pcs/api/requested-paths/?campaign=<v>`` -- the EVGEN paths requested for
  a campaign, each with its detector configuration (read by ``campaign_provenance_sweep``,
  contract in ``docs/campaign_provenance.md``).

List answers may be a JSON array or a page ``{"results": [...], "next": <url>|null}``;
pages are followed.  The contract is written out in ``docs/rucio_snapshot.md``.

Every request is bounded: an answer of 429/502/503/504, a refused connection or a
timeout is tried again, at most ``tries`` times in all with doubling waits, so one call
takes at most ``tries * timeout + sum(backoffs)`` seconds.  Once a call has used up its
tries the catalogue counts as down for the rest of the job and later calls fail at
once, so a hanging catalogue cannot stretch a run of many task PATCHes past its time
limit.  Retrying a PATCH is safe: it replaces the task's ``overrides`` whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import requests
from opsagent import doubling, retried

API = "/pcs/api"
MAX_PAGES = 1000
#: Answers that say "not now" rather than "no": worth another try.
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
#: A ``Retry-After`` longer than this is not waited for in full.
MAX_RETRY_AFTER = 30.0


class CatalogueError(Exception):
    """A catalogue request failed; the message says which request and why."""


class _Transient(Exception):
    """A try that another try may fix; ``wait`` is the server's Retry-After, if any."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return min(max(float(resp.headers.get("Retry-After", "")), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return None  # absent, or an HTTP date: the own backoff applies


class Catalogue:
    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | str = True,
        timeout: float = 30.0,
        remote_user: str | None = None,
        tries: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.verify = verify
        self.timeout = timeout
        self.tries = max(1, tries)
        self.backoff = backoff
        self.sleep = sleep
        #: Why the catalogue counts as down (a call used up its tries), else ``None``.
        self.down: str | None = None
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "opsagent-rucio-snapshot"
        if remote_user:
            self.session.headers["X-Remote-User"] = remote_user

    def backoffs(self) -> list[float]:
        """The waits between tries of one call."""
        return doubling(self.backoff, self.tries)

    def bound(self) -> float:
        """The longest one call can take, in seconds (Retry-After aside)."""
        return self.tries * self.timeout + sum(self.backoffs())

    def _request(
        self, method: str, url: str, params: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        shown = f"{url}?{urlencode(params)}" if params else url
        if self.down is not None:
            raise CatalogueError(
                f"{method} {shown}: not tried, the catalogue is down ({self.down})"
            )
        try:
            return retried(
                lambda: self._try(method, url, shown, params, **kw),
                self.backoffs(),
                transient=lambda exc: isinstance(exc, _Transient),
                wait_of=lambda exc: exc.wait if isinstance(exc, _Transient) else None,
                sleep=self.sleep,
            )
        except _Transient as exc:
            tried = f"{self.tries} tr{'y' if self.tries == 1 else 'ies'}"
            self.down = f"{exc} after {tried}"
            raise CatalogueError(f"{method} {shown}: {exc} after {tried}") from None

    def _try(
        self, method: str, url: str, shown: str, params: dict[str, str] | None, **kw: Any
    ) -> Any:
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
        except requests.exceptions.SSLError as exc:
            raise CatalogueError(f"{method} {shown}: {type(exc).__name__}: {exc}") from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        except requests.RequestException as exc:
            raise CatalogueError(f"{method} {shown}: {type(exc).__name__}: {exc}") from exc
        if not 200 <= resp.status_code < 300:
            body = " ".join(resp.text.split())[:200]
            status = f"HTTP {resp.status_code} {body}".rstrip()
            if resp.status_code in TRANSIENT_STATUS:
                raise _Transient(status, _retry_after(resp))
            raise CatalogueError(f"{method} {shown}: {status}")
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

    def requested_paths(self, campaign: str) -> list[dict[str, Any]]:
        """The campaign's requested EVGEN paths: rows with ``input_path`` and
        ``detector_config``, as the catalogue sent them (the caller checks each)."""
        return self._list(f"{self.base}{API}/requested-paths/", {"campaign": campaign})

    def replace_outputs(self, task: dict[str, Any], outputs: list[dict[str, Any]]) -> None:
        """PATCH the task's overrides with ``outputs`` replaced, other keys kept as read."""
        name = task["name"]
        if name in (".", ".."):
            # quote() keeps dots, and a dot segment would be resolved in the URL: ".."
            # would PATCH <base>/pcs/api/ itself.
            raise CatalogueError(f"PATCH task {name!r}: not a name that can be put in a URL")
        overrides = task.get("overrides")
        overrides = dict(overrides) if isinstance(overrides, dict) else {}
        overrides["outputs"] = outputs
        url = f"{self.base}{API}/prod-tasks/{quote(name, safe='')}/"
        self._request("PATCH", url, json={"overrides": overrides})
