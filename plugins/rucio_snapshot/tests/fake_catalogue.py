"""The production catalogue (PCS) as documented in docs/rucio_snapshot.md, on loopback.

Built on ``opsagent.testing.FakeServer``.  It keeps tasks in memory, pages task
lists (``{"count", "next", "previous", "results"}``, a few per page, as Django REST
framework does; the requested paths of ``campaign_provenance_sweep`` a hundred a page),
and applies a PATCH the way a Django JSONField does: the
``overrides`` sent replace the stored ones whole.  Failures are switched on per task
or per endpoint.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote, unquote

from opsagent.testing import FakeServer, Request, Response

PAGE = 4
PATHS_PAGE = 100


class FakeCatalogue:
    def __init__(
        self,
        server: FakeServer,
        campaigns: list[dict[str, Any]],
        tasks: list[dict[str, Any]],
        requested: dict[str, list[Any]] | None = None,
    ) -> None:
        self.server = server
        self.campaigns = campaigns
        self.tasks = {t["name"]: copy.deepcopy(t) for t in tasks}
        self.failing_patch: set[str] = set()
        self.list_status: int | None = None
        #: campaign -> its rows of ``GET /pcs/api/requested-paths/?campaign=``, as served.
        self.requested = dict(requested or {})
        self.paths_status: int | None = None
        server.route("GET", "/pcs/api/campaigns/", lambda _r: list(self.campaigns))
        server.route("GET", "/pcs/api/prod-tasks/", self._list)
        server.route("PATCH", "/pcs/api/prod-tasks/<name>/", self._patch)
        server.route("GET", "/pcs/api/requested-paths/", self._requested)

    def _requested(self, req: Request) -> Any:
        if self.paths_status is not None:
            return Response.json({"detail": "catalogue is down"}, self.paths_status)
        campaign = req.arg("campaign") or ""
        rows = self.requested.get(campaign, [])
        page = int(req.arg("page") or 1)
        more = page * PATHS_PAGE < len(rows)
        base = f"{self.server.url}/pcs/api/requested-paths/?campaign={quote(campaign)}"
        return {
            "count": len(rows),
            "next": f"{base}&page={page + 1}" if more else None,
            "previous": f"{base}&page={page - 1}" if page > 1 else None,
            "results": copy.deepcopy(rows[(page - 1) * PATHS_PAGE : page * PATHS_PAGE]),
        }

    def _list(self, req: Request) -> Any:
        if self.list_status is not None:
            return Response.json({"detail": "catalogue is down"}, self.list_status)
        campaign = req.arg("campaign")
        rows = sorted(
            (t for t in self.tasks.values() if t.get("campaign") == campaign),
            key=lambda t: t["name"],
        )
        page = int(req.arg("page") or 1)
        chunk = rows[(page - 1) * PAGE : page * PAGE]
        more = page * PAGE < len(rows)
        base = f"{self.server.url}/pcs/api/prod-tasks/?campaign={campaign}"
        return {
            "count": len(rows),
            "next": f"{base}&page={page + 1}" if more else None,
            "previous": f"{base}&page={page - 1}" if page > 1 else None,
            "results": copy.deepcopy(chunk),
        }

    def _patch(self, req: Request) -> Any:
        name = unquote(req.params["name"])
        if name in self.failing_patch:
            return Response.json({"detail": "database error"}, 500)
        task = self.tasks.get(name)
        if task is None:
            return Response.json({"detail": "Not found."}, 404)
        try:
            body = req.json()
        except ValueError:
            return Response.json({"detail": "JSON parse error"}, 400)
        if (
            not isinstance(body, dict)
            or set(body) - {"overrides"}
            or not isinstance(body.get("overrides"), dict)
        ):
            return Response.json({"overrides": ["expected a JSON object"]}, 400)
        task["overrides"] = body["overrides"]
        return copy.deepcopy(task)

    def outputs(self, name: str) -> list[dict[str, Any]] | None:
        return (self.tasks[name].get("overrides") or {}).get("outputs")

    def patches(self) -> list[Request]:
        return [r for r in self.server.requests if r.method == "PATCH"]
