"""Reading a campaign's RECO datasets and their replicas out of Rucio.

:func:`sweep` is the capability's way: one long listing of ``/RECO/<v>/*`` (or one per
selected detector configuration), each dataset placed on its request as it arrives,
and the per-RSE replicas of the kept ones asked for 100 at a time in bulk requests
(``rucio_snapshot``'s :func:`~opsagent_rucio_snapshot.fetch.fetch_batch`, which asks a
failed batch again one dataset at a time), at most ``parallel`` requests in flight.

:func:`sweep_one_by_one` is the way the hand-run scripts did it, kept as the reference
the benchmark's baseline times and the tests compare against: per requested path a
listing of its datasets, then metadata and replicas per dataset, one request at a time.

A sweep is all or nothing: a listing or a dataset that still fails raises
:class:`SweepFailed`, since a path status computed without some of its datasets would
be wrong, and the caller then leaves the previous cache file as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from opsagent_rucio_snapshot.fetch import (
    BATCH,
    Listed,
    Rucio,
    describe,
    fetch_batch,
    fetch_dataset,
)

from opsagent_campaign_provenance.provenance import Assignment, stage_prefix
from opsagent_campaign_provenance.requested import Requested, Selection

SHOWN_ERRORS = 3


class SweepFailed(Exception):
    """Rucio could not give the whole campaign; the message says what failed."""


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


def sweep(
    rucio: Rucio,
    pool: ThreadPoolExecutor,
    scope: str,
    stage: str,
    version: str,
    requests: list[Requested],
    selection: Selection,
    batch: int = BATCH,
) -> tuple[Assignment, dict[str, dict[str, Any]]]:
    """The campaign's datasets placed on ``requests``, and their records by DID."""
    assignment = Assignment.empty(requests)
    futures: list[Future[list[dict[str, Any]]]] = []
    try:
        for prefix in listing_prefixes(stage, version, selection):
            try:
                rows = rucio.client().list_dids(
                    scope, {"name": prefix + "*"}, did_type="dataset", long=True
                )
                waiting: list[Listed] = []
                for listed in _names(rows, prefix):
                    if not assignment.place(listed.name, stage_prefix(stage, version), selection):
                        continue
                    waiting.append(listed)
                    if len(waiting) == batch:
                        futures.append(pool.submit(fetch_batch, rucio, scope, waiting))
                        waiting = []
                if waiting:
                    futures.append(pool.submit(fetch_batch, rucio, scope, waiting))
            except Exception as exc:  # noqa: BLE001 - the whole sweep fails with its cause
                raise SweepFailed(f"listing {scope}:{prefix}*: {describe(exc)}") from exc
        records = _check(r for f in futures for r in f.result())
    except BaseException:
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
