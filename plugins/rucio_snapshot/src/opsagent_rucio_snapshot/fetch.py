"""Reading one campaign out of Rucio with few requests and a bounded number in flight.

One login per job; each worker thread then has its own client (its own HTTP session)
reading the job's private token file (:func:`opsagent.rucio_client`), so no token is
shared with other programs or other jobs of the same account.

A stage is listed in long form, which carries each dataset's own ``length`` and
``bytes`` (the same DID columns ``get_metadata`` reads), so no metadata request is
needed.  Listed datasets stream into a thread pool of ``parallel`` workers in batches
of ``batch``; a worker asks for the per-RSE dataset replicas of its whole batch in one
bulk request, so at most ``parallel`` requests are in flight besides the listing.  If
a bulk request fails, that batch is asked for one dataset at a time, and a dataset that
still fails keeps its error in its own record; a stage whose listing fails keeps its
error in the stage's entry.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs
from opsagent import rucio_client

from opsagent_rucio_snapshot.cachefiles import now

#: The per-RSE fields kept in the snapshot.  Timestamps are left out on purpose: an
#: ``accessed_at`` that moves would make two runs over the same data differ.
REPLICA_FIELDS = ("rse", "length", "available_length", "bytes", "available_bytes", "state")
MAX_ERROR = 300
#: Datasets per bulk replica request; the server accepts at most ``MAX_BATCH``.
BATCH = 100
MAX_BATCH = 1000


class RucioUnavailable(Exception):
    """Rucio could not be reached or refused the login: nothing can be fetched."""


def describe(exc: BaseException) -> str:
    """One line naming an exception, short enough for an event."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


@attrs.frozen
class RucioAccess:
    """How to reach Rucio: resolved from config and the ``rucio_userpass`` credential."""

    url: str
    account: str
    username: str
    password: str = attrs.field(repr=False)
    #: requests' ``verify``: True, False, or a CA bundle path.
    verify: bool | str = True
    timeout: float = 60.0
    vo: str | None = None


class Rucio:
    """Thread-local Rucio clients sharing one login, its token in ``token_dir`` (by
    default a temporary directory of its own, removed with it)."""

    def __init__(
        self, access: RucioAccess, token_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.access = access
        if token_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="rucio-snapshot-token-")
            token_dir = self._own_dir.name
        self.token_dir = token_dir
        self._local = threading.local()
        try:
            self._local.client = self._new_client()
        except Exception as exc:  # noqa: BLE001 - any failure here means no Rucio at all
            raise RucioUnavailable(
                f"Rucio {access.url}: cannot log in as account {access.account!r} "
                f"(userpass {access.username!r}): {describe(exc)}"
            ) from exc

    def _new_client(self) -> Any:
        a = self.access
        return rucio_client(
            self.token_dir,
            # One try per request: a failure is recorded with its dataset or stage.
            request_retries=1,
            rucio_host=a.url,
            auth_host=a.url,
            account=a.account,
            auth_type="userpass",
            creds={"username": a.username, "password": a.password},
            ca_cert=a.verify,  # type: ignore[arg-type]  # requests' verify, bool or path
            timeout=a.timeout,
            vo=a.vo,
            user_agent="opsagent-rucio-snapshot",
        )

    def client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client()
        return client


@attrs.frozen
class Listed:
    """A dataset as the long listing gives it: its name and its own length and bytes."""

    name: str
    length: int | None
    bytes: int | None

    @classmethod
    def of(cls, row: Any) -> Listed | None:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            return None
        return cls(row["name"], row.get("length"), row.get("bytes"))


def replica_record(raw: dict[str, Any]) -> dict[str, Any]:
    rec = {key: raw.get(key) for key in REPLICA_FIELDS}
    if rec["state"] is not None:
        rec["state"] = str(getattr(rec["state"], "name", rec["state"]))
    return rec


def by_rse(raw: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replica records (raw rows or records already kept) sorted by RSE."""
    return sorted((replica_record(r) for r in raw), key=lambda r: str(r["rse"]))


def dataset_record(
    scope: str,
    name: str,
    length: int | None = None,
    bytes_: int | None = None,
    replicas: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "did": f"{scope}:{name}",
        "length": length,
        "bytes": bytes_,
        "rse_replicas": replicas or [],
    }


def fetch_dataset(rucio: Rucio, scope: str, name: str) -> dict[str, Any]:
    """One dataset's record the legacy way: its metadata, then its per-RSE replicas.

    Two requests per dataset; kept as the reference :func:`fetch_campaign_one_by_one`
    (and so the benchmark's baseline and the tests) measures and compares against.
    """
    record = dataset_record(scope, name)
    try:
        client = rucio.client()
        meta = client.get_metadata(scope, name)
        record["length"] = meta.get("length")
        record["bytes"] = meta.get("bytes")
        record["rse_replicas"] = by_rse(client.list_dataset_replicas(scope, name))
    except Exception as exc:  # noqa: BLE001 - recorded with the dataset
        record["error"] = describe(exc)
    return record


def fetch_listed(rucio: Rucio, scope: str, listed: Listed) -> dict[str, Any]:
    """One listed dataset's record from one replica request; a failure stays in ``error``."""
    record = dataset_record(scope, listed.name, listed.length, listed.bytes)
    try:
        record["rse_replicas"] = by_rse(rucio.client().list_dataset_replicas(scope, listed.name))
    except Exception as exc:  # noqa: BLE001 - recorded with the dataset
        record["error"] = describe(exc)
    return record


def fetch_batch(rucio: Rucio, scope: str, batch: list[Listed]) -> list[dict[str, Any]]:
    """The records of a batch of listed datasets, from one bulk replica request.

    If that request fails, each dataset of the batch is asked for on its own, so a
    dataset the server chokes on keeps its own error and the others their replicas.
    """
    found: dict[str, list[dict[str, Any]]] = {d.name: [] for d in batch}
    try:
        dids = [{"scope": scope, "name": d.name} for d in batch]
        for raw in rucio.client().list_dataset_replicas_bulk(dids):
            if raw.get("scope") == scope and raw.get("name") in found:
                found[raw["name"]].append(replica_record(raw))
    except Exception:  # noqa: BLE001 - each dataset then gets its own answer or error
        return [fetch_listed(rucio, scope, d) for d in batch]
    return [dataset_record(scope, d.name, d.length, d.bytes, by_rse(found[d.name])) for d in batch]


def stage_key(stage: str, version: str) -> str:
    return f"/{stage}/{version}"


def listing_failed(scope: str, prefix: str, exc: BaseException) -> dict[str, Any]:
    return {"count": 0, "datasets": [], "error": f"listing {scope}:{prefix}*: {describe(exc)}"}


def stage_entry(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    datasets = sorted(records, key=lambda d: d["did"])
    return {"count": len(datasets), "datasets": datasets}


def campaign_snapshot(
    fetched_at: str,
    scope: str,
    version: str,
    stages: tuple[str, ...] | list[str],
    entries: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "fetched_at": fetched_at,
        "scope": scope,
        "campaign_name": version,
        "campaigns": {stage_key(s, version): entries[stage_key(s, version)] for s in stages},
    }


def fetch_campaign(
    rucio: Rucio,
    pool: ThreadPoolExecutor,
    scope: str,
    version: str,
    stages: tuple[str, ...] | list[str],
    batch: int = BATCH,
) -> dict[str, Any]:
    """The snapshot of one campaign (the shape of the spec), stages fetched through ``pool``.

    Every stage's long listing is read to the end, each ``batch`` of names handed to
    the pool as soon as it is complete, before any result is awaited, so the listings
    of later stages overlap the replica requests of earlier ones.
    """
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch: expected 1 to {MAX_BATCH} datasets per request, got {batch}")
    fetched_at = now()
    pending: dict[str, list[Future[list[dict[str, Any]]]]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for stage in stages:
        key = stage_key(stage, version)
        prefix = key + "/"
        futures: list[Future[list[dict[str, Any]]]] = []
        try:
            rows = rucio.client().list_dids(
                scope, {"name": prefix + "*"}, did_type="dataset", long=True
            )
            waiting: list[Listed] = []
            for row in rows:
                listed = Listed.of(row)
                # The server's pattern is SQL LIKE: keep only what really has the prefix.
                if listed is None or not listed.name.startswith(prefix):
                    continue
                waiting.append(listed)
                if len(waiting) == batch:
                    futures.append(pool.submit(fetch_batch, rucio, scope, waiting))
                    waiting = []
            if waiting:
                futures.append(pool.submit(fetch_batch, rucio, scope, waiting))
        except Exception as exc:  # noqa: BLE001 - recorded with the stage
            for f in futures:
                f.cancel()
            entries[key] = listing_failed(scope, prefix, exc)
            continue
        pending[key] = futures
    for key, futures in pending.items():
        entries[key] = stage_entry(r for f in futures for r in f.result())
    return campaign_snapshot(fetched_at, scope, version, stages, entries)


def fetch_campaign_one_by_one(
    rucio: Rucio, scope: str, version: str, stages: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """The same snapshot fetched the legacy way: one dataset at a time, sequentially.

    Short listing, then :func:`fetch_dataset` (metadata, then replicas) per dataset,
    one request in flight.  Not used by the capability: it is the reference that the
    benchmark's baseline times and the tests compare :func:`fetch_campaign` against.
    """
    fetched_at = now()
    entries: dict[str, dict[str, Any]] = {}
    for stage in stages:
        key = stage_key(stage, version)
        prefix = key + "/"
        try:
            names = rucio.client().list_dids(scope, {"name": prefix + "*"}, did_type="dataset")
            records = [
                fetch_dataset(rucio, scope, name)
                for name in names
                if isinstance(name, str) and name.startswith(prefix)
            ]
        except Exception as exc:  # noqa: BLE001 - recorded with the stage
            entries[key] = listing_failed(scope, prefix, exc)
            continue
        entries[key] = stage_entry(records)
    return campaign_snapshot(fetched_at, scope, version, stages, entries)


def stage_errors(snapshot: dict[str, Any]) -> dict[str, str]:
    return {k: e["error"] for k, e in snapshot["campaigns"].items() if e.get("error")}


def dataset_errors(snapshot: dict[str, Any]) -> dict[str, str]:
    return {
        d["did"]: d["error"]
        for e in snapshot["campaigns"].values()
        for d in e.get("datasets") or []
        if d.get("error")
    }
