"""The doer of ``campaign_provenance_sweep``: sweep each campaign, write what changed.

Each campaign is one unit of failure: its requested paths (the catalogue), its sweep
(Rucio) and its cache file either work or add one clause to the job's error, and the
next campaign goes on.  A campaign that failed anywhere keeps its previous file as it
was.  The job fails (``ok: false``) when any clause was added.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import attrs
from opsagent import Job, JobFailed, Outcome, shown
from opsagent_rucio_snapshot.cachefiles import is_version
from opsagent_rucio_snapshot.catalogue import Catalogue, CatalogueError
from opsagent_rucio_snapshot.fetch import Rucio, RucioUnavailable, describe
from opsagent_rucio_snapshot.update import rucio_access, tls_choice

from opsagent_campaign_provenance import cachefile
from opsagent_campaign_provenance.config import ProvenanceConfig
from opsagent_campaign_provenance.provenance import STATUSES, document
from opsagent_campaign_provenance.requested import Selection, requests_of
from opsagent_campaign_provenance.sweep import SweepFailed, sweep

if TYPE_CHECKING:
    from opsagent_campaign_provenance import ProvenanceInput

SECTION = "[capability.campaign_provenance_sweep]"
CREDENTIAL = "rucio_userpass"


def catalogue_of(cfg: ProvenanceConfig, inp: ProvenanceInput, job: Job) -> Catalogue:
    url = cfg.catalogue_url or job.env.get("SWF_MONITOR_HTTP_URL", "")
    if not url:
        raise JobFailed(
            "the requested paths come from the catalogue, and no catalogue_url is set: "
            f"set {SECTION} catalogue_url (or SWF_MONITOR_HTTP_URL in [host] env_allow)"
        )
    verify, sentence = tls_choice(
        "catalogue", url, cfg.catalogue_tls_verify, cfg.catalogue_ca_bundle, SECTION
    )
    (job.log.warning if verify is False else job.log.info)(sentence)
    return Catalogue(
        url,
        verify=verify,
        timeout=cfg.catalogue_timeout,
        remote_user=inp.created_by or cfg.catalogue_user,
        tries=cfg.catalogue_tries,
        backoff=cfg.catalogue_backoff,
    )


def campaigns_to_sweep(
    inp: ProvenanceInput, cfg: ProvenanceConfig, catalogue: Catalogue
) -> list[Any]:
    """The request's campaign, else the catalogue's with a lifecycle in ``cfg.lifecycles``
    (unchecked: each is checked before it names a file or a Rucio query)."""
    if inp.campaign:
        return [inp.campaign]
    try:
        rows = catalogue.campaigns()
    except CatalogueError as exc:
        raise JobFailed(
            f"no campaign to sweep: cannot read campaigns from the catalogue: {exc}"
        ) from None
    found = [
        row["version"]
        for life in cfg.lifecycles
        for row in rows
        if row.get("lifecycle") == life and "version" in row
    ]
    if not found:
        raise JobFailed(
            "no campaign to sweep: the request names none and the catalogue lists none "
            f"with lifecycle {', '.join(cfg.lifecycles)}"
        )
    return list({repr(v): v for v in found}.values())  # a list or an object is data too


@attrs.define
class Sweep:
    """What one job did, campaign by campaign: the event's data and its error clauses."""

    job: Job
    cfg: ProvenanceConfig
    selection: Selection
    errors: list[str] = attrs.Factory(list)
    summary: dict[str, dict[str, Any]] = attrs.Factory(dict)

    def fail(self, version: str, clause: str) -> None:
        self.job.log.error("{}: {}", version, clause)
        self.errors.append(f"{version}: {clause}")

    def campaign(
        self, rucio: Rucio, pool: ThreadPoolExecutor, catalogue: Catalogue, version: Any
    ) -> None:
        cfg, log = self.cfg, self.job.log
        if not is_version(version):
            # The request's campaign was checked as input; the catalogue's was not, and a
            # version names a file and a Rucio query.
            self.fail(
                shown(version),
                "not a campaign version like 26.02.0 (as the catalogue lists it): not swept",
            )
            return
        try:
            rows = catalogue.requested_paths(version)
        except CatalogueError as exc:
            self.fail(version, f"catalogue: {exc}; previous provenance kept")
            return
        requests, rejected = requests_of(rows, self.selection)
        if rejected:
            log.warning(
                "{}: {} requested path(s) rejected, first: {}", version, len(rejected), rejected[0]
            )
        try:
            assignment, records = sweep(
                rucio,
                pool,
                cfg.scope,
                cfg.stage,
                version,
                requests,
                self.selection,
                max_datasets=cfg.max_datasets,
            )
        except SweepFailed as exc:
            self.fail(version, f"Rucio: {exc}; previous provenance kept")
            return
        doc = document(
            scope=cfg.scope,
            stage=cfg.stage,
            version=version,
            rses=tuple(cfg.rses),
            selection=self.selection,
            assignment=assignment,
            records=records,
            rejected=rejected,
        )
        path = cachefile.provenance_path(self.job.cache_dir, version)
        try:
            changed, generated_at = cachefile.write_if_changed(path, doc)
        except (OSError, cachefile.CacheRefused) as exc:
            self.fail(version, f"cannot write {path}: {describe(exc)}")
            return
        log.info(
            "{}: {} requested path(s), {} dataset(s): {}; {}",
            version,
            len(requests),
            len(records),
            ", ".join(f"{doc['counts'][s]} {s}" for s in STATUSES),
            f"written to {path}" if changed else f"unchanged since {generated_at}, not rewritten",
        )
        self.summary[version] = {
            "file": str(path),
            "changed": changed,
            "generated_at": generated_at,
            "counts": doc["counts"],
            "requested": len(requests),
            "datasets": len(records),
            "rejected": len(rejected),
        }

    def data(self) -> dict[str, Any]:
        counts = dict.fromkeys(STATUSES, 0)
        for info in self.summary.values():
            for status in STATUSES:
                counts[status] += info["counts"][status]
        return {
            "counts": counts,
            "campaigns": self.summary,
            "unchanged": sorted(v for v, i in self.summary.items() if not i["changed"]),
        }


def sweep_campaigns(inp: ProvenanceInput, job: Job) -> Outcome:
    """Sweep the campaigns; write each one's provenance file when it changed."""
    cfg = job.config if job.config is not None else ProvenanceConfig()
    access = rucio_access(cfg, job, SECTION)
    catalogue = catalogue_of(cfg, inp, job)
    versions = campaigns_to_sweep(inp, cfg, catalogue)
    selection = Selection(
        frozenset(inp.detector_configs) if inp.detector_configs else None, inp.path_filter
    )
    run = Sweep(job, cfg, selection)
    # The login token lives in the job's private directory and goes with it.
    with job.private_dir() as tokens, ThreadPoolExecutor(cfg.parallel, "rucio-sweep") as pool:
        try:
            rucio = Rucio(access, tokens.path)
        except RucioUnavailable as exc:
            raise JobFailed(str(exc), **run.data()) from None
        for version in versions:
            run.campaign(rucio, pool, catalogue, version)
    if run.errors:
        raise JobFailed("; ".join(run.errors), **run.data())
    return Outcome.ok(**run.data())
