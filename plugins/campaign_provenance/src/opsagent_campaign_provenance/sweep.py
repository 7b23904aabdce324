"""Reading a campaign's RECO datasets and their replicas out of Rucio.

:func:`sweep` is the capability's way: one long listing of ``/RECO/<v>/*`` (or one per
selected detector configuration), each dataset placed on its request as it arrives,
and the per-RSE replicas of the kept ones asked for 100 at a time in bulk requests, at
most ``parallel`` requests in flight.

:func:`sweep_one_by_one` is the way the hand-run scripts did it, kept as the reference
the benchmark's baseline times and the tests compare against: per requested path a
listing of its datasets, then metadata and replicas per dataset, one request at a time.

A sweep is all or nothing: a path status computed without some of its datasets would be
wrong, so a failed listing or bulk request raises :class:`SweepFailed` and the caller
leaves the previous cache file as it was.  Unlike ``rucio_snapshot`` (which keeps each
dataset's error with the dataset) a failed batch is not asked again one dataset at a
time, and once one request failed the batches not yet started are not sent: a Rucio
that starts failing mid-sweep ends the sweep in about one request's time (the client's
own back-off on 503 included), not one back-off per dataset.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from opsagent_rucio_snapshot.fetch import (
    BATCH,
    Listed,
    Rucio,
    by_rse,
    dataset_record,
    describe,
    fetch_dataset,
    replica_record,
)

from opsagent_campaign_provenance.provenance import Assignment, stage_prefix
from opsagent_campaign_provenance.requested import Requested, Selection

SHOWN_ERRORS = 3
#: Datasets one campaign's listing may hold (``max_datasets``'s default): Rucio's answers
#: are not trusted to be small, and everything listed is held until the file is written.
MAX_DATASETS = 200_000
#: Replica rows one dataset may have in a bulk answer: one per RSE, a few dozen at most.
MAX_REPLICAS = 1_000


class TooMuch(Exception):
    """A Rucio answer larger than any real one; the sweep stops rather than hold it."""


class SweepFailed(Exception):
    """Rucio could not give the whole campaign; the message says what failed."""


class NotAsked(SweepFailed):
    """A batch not sent because an earlier request of the sweep had failed."""


def listing_prefixes(stage: str, version: str, selection: Selection) -> list[str]:
    base = stage_prefix(stage, version)
    if selection.detector_configs is None:
        return [base]
    return [f"{base}{d}/" for d in sorted(selection.detector_configs)]


def _names(rows: Iterable[Any], prefix: str) -> Iterable[Listed]:
    for row in rows:
        listed = Listed.of(row)
        # The server's pattern is SQL LIKE ("_" is any character): keep the real prefix.
        if listed is not None and listed.name.startswith(prefix):
            yield listed


def _check(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {r["did"]: r for r in records}
    failed = [(did, r["error"]) for did, r in out.items() if r.get("error")]
    if failed:
        shown = "; ".join(f"{did}: {err}" for did, err in failed[:SHOWN_ERRORS])
        more = len(failed) - SHOWN_ERRORS
        raise SweepFailed(
            f"{len(failed)} dataset(s) failed ({shown}" + (f"; {more} more)" if more > 0 else ")")
        )
    return out


def fetch_bulk(
    rucio: Rucio, scope: str, batch: list[Listed], stop: threading.Event
) -> list[dict[str, Any]]:
    """The records of a batch of listed datasets from one bulk replica request; a
    failure sets ``stop``, and a batch started after that is not asked at all."""
    if stop.is_set():
        raise NotAsked("not asked: an earlier request of the sweep failed")
    found: dict[str, list[dict[str, Any]]] = {d.name: [] for d in batch}
    try:
        dids = [{"scope": scope, "name": d.name} for d in batch]
        for raw in rucio.client().list_dataset_replicas_bulk(dids):
            if isinstance(raw, dict) and raw.get("scope") == scope and raw.get("name") in found:
                rows = found[raw["name"]]
                if len(rows) == MAX_REPLICAS:
                    raise TooMuch(
                        f"more than {MAX_REPLICAS} replica rows for {scope}:{raw['name']}; "
                        "an answer that large is not trusted"
                    )
                rows.append(replica_record(raw))
    except Exception as exc:  # noqa: BLE001 - the whole sweep fails with its cause
        stop.set()
        raise SweepFailed(
            f"replicas of {len(batch)} dataset(s) from {scope}:{batch[0].name}: {describe(exc)}"
        ) from exc
    return [dataset_record(scope, d.name, d.length, d.bytes, by_rse(found[d.name])) for d in batch]


def _results(futures: list[Future[list[dict[str, Any]]]]) -> list[list[dict[str, Any]]]:
    """Every batch's records; else the failure that stopped the sweep (not the batches
    it kept from being asked)."""
    results, errors = [], []
    for f in futures:
        try:
            results.append(f.result())
        except SweepFailed as exc:
            errors.append(exc)
    if errors:
        raise next((e for e in errors if not isinstance(e, NotAsked)), errors[0])
    return results


def sweep(
    rucio: Rucio,
    pool: ThreadPoolExecutor,
    scope: str,
    stage: str,
    version: str,
    requests: list[Requested],
    selection: Selection,
    batch: int = BATCH,
    max_datasets: int = MAX_DATASETS,
) -> tuple[Assignment, dict[str, dict[str, Any]]]:
    """The campaign's datasets placed on ``requests``, and their records by DID.  A
    listing of more than ``max_datasets`` datasets fails the sweep."""
    assignment = Assignment.empty(requests)
    futures: list[Future[list[dict[str, Any]]]] = []
    stop = threading.Event()
    listed_count = 0
    try:
        for prefix in listing_prefixes(stage, version, selection):
            try:
                rows = rucio.client().list_dids(
                    scope, {"name": prefix + "*"}, did_type="dataset", long=True
                )
                waiting: list[Listed] = []
                for listed in _names(rows, prefix):
                    listed_count += 1
                    if listed_count > max_datasets:
                        raise TooMuch(
                            f"more than {max_datasets} datasets (max_datasets); a listing "
                            "that large is not trusted"
                        )
                    if not assignment.place(listed.name, stage_prefix(stage, version), selection):
                        continue
                    waiting.append(listed)
                    if len(waiting) == batch:
                        futures.append(pool.submit(fetch_bulk, rucio, scope, waiting, stop))
                        waiting = []
                if waiting:
                    futures.append(pool.submit(fetch_bulk, rucio, scope, waiting, stop))
            except Exception as exc:  # noqa: BLE001 - the whole sweep fails with its cause
                raise SweepFailed(f"listing {scope}:{prefix}*: {describe(exc)}") from exc
        records = _check(r for result in _results(futures) for r in result)
    except BaseException:
        stop.set()
        for f in futures:
            f.cancel()
        raise
    return assignment, records


def sweep_one_by_one(
    rucio: Rucio,
    scope: str,
    stage: str,
    version: str,
    requests: list[Requested],
    selection: Selection,
) -> tuple[Assignment, dict[str, dict[str, Any]]]:
    """The same result the way the hand-run scripts got it, one request at a time.

    For each requested path: list ``/<stage>/<v>/<detector>/<suffix>*`` and keep the
    path's own dataset and those beneath it; then one listing of the whole stage for
    the datasets nobody requested; then, per dataset kept, ``get_metadata`` and
    ``list_dataset_replicas``.
    """
    prefix = stage_prefix(stage, version)
    assignment = Assignment.empty(requests)
    seen: set[str] = set()
    try:
        for req in requests:
            base = f"{prefix}{req.detector_config}/{req.suffix}"
            for name in rucio.client().list_dids(scope, {"name": base + "*"}, did_type="dataset"):
                if isinstance(name, str) and (name == base or name.startswith(base + "/")):
                    seen.add(name)
        for listing in listing_prefixes(stage, version, selection):
            for name in rucio.client().list_dids(
                scope, {"name": listing + "*"}, did_type="dataset"
            ):
                if isinstance(name, str) and name.startswith(listing):
                    seen.add(name)
    except Exception as exc:  # noqa: BLE001 - the whole sweep fails with its cause
        raise SweepFailed(f"listing: {describe(exc)}") from exc
    kept = sorted(n for n in seen if assignment.place(n, prefix, selection))
    return assignment, _check(fetch_dataset(rucio, scope, n) for n in kept)
