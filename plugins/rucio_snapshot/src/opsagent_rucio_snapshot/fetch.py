"""Reading one campaign out of Rucio with a bounded number of requests in flight.

One login per job; each worker thread then has its own client (its own HTTP session)
reading the job's private token file, so no token is shared with other programs or
other jobs of the same account.  Dataset names stream out of the stage listing into a
thread pool of ``parallel`` workers; a worker makes two requests per dataset (metadata,
then per-RSE dataset replicas), so at most ``parallel`` dataset requests are in flight
besides the listing.  A dataset that fails keeps its error in its own record; a stage
whose listing fails keeps its error in the stage's entry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from opsagent_rucio_snapshot.cachefiles import now

#: The per-RSE fields kept in the snapshot.  Timestamps are left out on purpose: an
#: ``accessed_at`` that moves would make two runs over the same data differ.
REPLICA_FIELDS = ("rse", "length", "available_length", "bytes", "available_bytes", "state")
MAX_ERROR = 300


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


@contextlib.contextmanager
def private_token() -> Iterator[Path]:
    """A throw-away directory whose ``rucio.cfg`` points the client's token file into it.

    rucio-clients caches its token per account under ``$TMPDIR`` unless
    ``[client] auth_token_file_path`` says otherwise, and reads that only from a config
    file, found through ``RUCIO_CONFIG``; the client caches the parsed file, so the
    cache is cleared on the way in and out.
    """
    from rucio.common.config import clean_cached_config

    directory = Path(tempfile.mkdtemp(prefix="rucio-snapshot-token-"))
    cfg = directory / "rucio.cfg"
    cfg.write_text(f"[client]\nauth_token_file_path = {directory / 'token'}\nrequest_retries = 1\n")
    saved = os.environ.get("RUCIO_CONFIG")
    os.environ["RUCIO_CONFIG"] = str(cfg)
    clean_cached_config()
    try:
        yield directory
    finally:
        if saved is None:
            os.environ.pop("RUCIO_CONFIG", None)
        else:
            os.environ["RUCIO_CONFIG"] = saved
        clean_cached_config()
        shutil.rmtree(directory, ignore_errors=True)


class Rucio:
    """Thread-local Rucio clients sharing one login (use inside :func:`private_token`)."""

    def __init__(self, access: RucioAccess) -> None:
        self.access = access
        self._local = threading.local()
        try:
            self._local.client = self._new_client()
        except Exception as exc:  # noqa: BLE001 - any failure here means no Rucio at all
            raise RucioUnavailable(
                f"Rucio {access.url}: cannot log in as account {access.account!r} "
                f"(userpass {access.username!r}): {describe(exc)}"
            ) from exc

    def _new_client(self) -> Any:
        from rucio.client import Client

        a = self.access
        return Client(
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


def replica_record(raw: dict[str, Any]) -> dict[str, Any]:
    rec = {key: raw.get(key) for key in REPLICA_FIELDS}
    if rec["state"] is not None:
        rec["state"] = str(getattr(rec["state"], "name", rec["state"]))
    return rec


def fetch_dataset(rucio: Rucio, scope: str, name: str) -> dict[str, Any]:
    """One dataset's snapshot record; a failure is kept in ``error``, never raised."""
    record: dict[str, Any] = {
        "did": f"{scope}:{name}",
        "length": None,
        "bytes": None,
        "rse_replicas": [],
    }
    try:
        client = rucio.client()
        meta = client.get_metadata(scope, name)
        record["length"] = meta.get("length")
        record["bytes"] = meta.get("bytes")
        replicas = [replica_record(r) for r in client.list_dataset_replicas(scope, name)]
        record["rse_replicas"] = sorted(replicas, key=lambda r: str(r["rse"]))
    except Exception as exc:  # noqa: BLE001 - recorded with the dataset
        record["error"] = describe(exc)
    return record


def stage_key(stage: str, version: str) -> str:
    return f"/{stage}/{version}"


def fetch_campaign(
    rucio: Rucio,
    pool: ThreadPoolExecutor,
    scope: str,
    version: str,
    stages: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    """The snapshot of one campaign (the shape of the spec), stages fetched through ``pool``.

    Every stage's listing is read to the end, each name handed to the pool as it
    arrives, before any result is awaited, so the listings of later stages overlap the
    dataset requests of earlier ones.
    """
    fetched_at = now()
    pending: dict[str, list[Future[dict[str, Any]]]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for stage in stages:
        key = stage_key(stage, version)
        prefix = key + "/"
        futures: list[Future[dict[str, Any]]] = []
        try:
            names = rucio.client().list_dids(scope, {"name": prefix + "*"}, did_type="dataset")
            for name in names:
                # The server's pattern is SQL LIKE: keep only what really has the prefix.
                if isinstance(name, str) and name.startswith(prefix):
                    futures.append(pool.submit(fetch_dataset, rucio, scope, name))
        except Exception as exc:  # noqa: BLE001 - recorded with the stage
            for f in futures:
                f.cancel()
            entries[key] = {
                "count": 0,
                "datasets": [],
                "error": f"listing {scope}:{prefix}*: {describe(exc)}",
            }
            continue
        pending[key] = futures
    for key, futures in pending.items():
        datasets = sorted((f.result() for f in futures), key=lambda d: d["did"])
        entries[key] = {"count": len(datasets), "datasets": datasets}
    return {
        "fetched_at": fetched_at,
        "scope": scope,
        "campaign_name": version,
        "campaigns": {stage_key(s, version): entries[stage_key(s, version)] for s in stages},
    }


def stage_errors(snapshot: dict[str, Any]) -> dict[str, str]:
    return {k: e["error"] for k, e in snapshot["campaigns"].items() if e.get("error")}


def dataset_errors(snapshot: dict[str, Any]) -> dict[str, str]:
    return {
        d["did"]: d["error"]
        for e in snapshot["campaigns"].values()
        for d in e.get("datasets") or []
        if d.get("error")
    }
