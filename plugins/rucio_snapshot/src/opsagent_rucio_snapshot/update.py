"""The doer of ``rucio_snapshot_update``: refresh every campaign, match the current one.

Each campaign is one unit of failure: its fetch, its snapshot file, and (for the
current campaign) the catalogue update either work or add one clause to the job's
error, and the next campaign goes on.  The job fails (``ok: false``) when any clause
was added; whatever did succeed stays written.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import attrs
from opsagent import Job, JobFailed, Outcome, shown

from opsagent_rucio_snapshot import cachefiles
from opsagent_rucio_snapshot.catalogue import Catalogue, CatalogueError
from opsagent_rucio_snapshot.config import RucioSettings, SnapshotConfig
from opsagent_rucio_snapshot.fetch import (
    Rucio,
    RucioAccess,
    RucioUnavailable,
    dataset_errors,
    describe,
    fetch_campaign,
    stage_errors,
)
from opsagent_rucio_snapshot.match import match_snapshot, task_filters

if TYPE_CHECKING:
    from opsagent_rucio_snapshot import SnapshotInput

SECTION = "[capability.rucio_snapshot_update]"
CREDENTIAL = "rucio_userpass"
#: Campaign lifecycles whose data is still moving, so worth a fresh snapshot.
REFRESHED_LIFECYCLES = ("current", "last", "producing")
SHOWN_DATASET_ERRORS = 3


def tls_choice(
    side: str, url: str, verify: bool | None, ca_bundle: str | None, section: str = SECTION
) -> tuple[bool | str, str]:
    """requests' ``verify`` for ``url`` and the sentence that logs the choice.

    An https URL without an explicit choice is refused: the deployed job ran with
    verification off, and that must be a decision someone wrote down, not a default.
    """
    if not url.lower().startswith("https://"):
        return True, f"{side} {url}: plain http, no TLS to verify"
    if verify is None:
        raise JobFailed(
            f"{side} {url} is https but TLS verification is not chosen: set {section} "
            f"{side}_tls_verify = true (and {side}_ca_bundle = <CA file> if needed), or "
            f"{side}_tls_verify = false to turn verification off knowingly"
        )
    if verify is False:
        return False, (
            f"{side} {url}: TLS certificate verification is OFF "
            f"({section} {side}_tls_verify = false)"
        )
    return (ca_bundle or True), (
        f"{side} {url}: TLS verified against {ca_bundle or 'the default CA bundle'}"
    )


def _setting(value: str, job: Job, variable: str) -> str:
    return value or job.env.get(variable, "")


def rucio_access(cfg: RucioSettings, job: Job, section: str = SECTION) -> RucioAccess:
    """Where and as whom to log in to Rucio: the settings of ``section`` (another
    capability reading the same Rucio passes its own), the job's environment, and the
    ``rucio_userpass`` credential."""
    url = _setting(cfg.rucio_url, job, "JLAB_RUCIO_URL")
    account = _setting(cfg.rucio_account, job, "JLAB_RUCIO_ACCOUNT")
    username = _setting(cfg.rucio_username, job, "JLAB_RUCIO_USERNAME")
    missing = [
        name
        for name, value in (
            ("rucio_url", url),
            ("rucio_account", account),
            ("rucio_username", username),
        )
        if not value
    ]
    if missing:
        raise JobFailed(f"Rucio is not configured: set {', '.join(missing)} in {section}")
    try:
        password = job.credential(CREDENTIAL).read()
    except (LookupError, OSError) as exc:
        raise JobFailed(
            f"Rucio password missing: {exc}; configure [credentials.{CREDENTIAL}] "
            f'file = ... or env = "JLAB_RUCIO_PASSWORD"'
        ) from None
    verify, sentence = tls_choice("rucio", url, cfg.rucio_tls_verify, cfg.rucio_ca_bundle, section)
    (job.log.warning if verify is False else job.log.info)(sentence)
    return RucioAccess(
        url=url,
        account=account,
        username=username,
        password=password,
        verify=verify,
        timeout=cfg.request_timeout,
        vo=cfg.rucio_vo,
    )


def catalogue_of(cfg: SnapshotConfig, inp: SnapshotInput, job: Job) -> Catalogue | None:
    url = _setting(cfg.catalogue_url, job, "SWF_MONITOR_HTTP_URL")
    if not url:
        job.log.info("no catalogue_url configured: snapshots only, no matching")
        return None
    verify, sentence = tls_choice(
        "catalogue", url, cfg.catalogue_tls_verify, cfg.catalogue_ca_bundle
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


def _unique(versions: list[str]) -> list[str]:
    return list(dict.fromkeys(versions))


def campaigns_to_refresh(
    inp: SnapshotInput, cfg: SnapshotConfig, catalogue: Catalogue | None
) -> tuple[list[str], str]:
    """The campaigns to refresh and the current one (matched onto tasks)."""
    if inp.campaigns:
        return _unique(inp.campaigns), inp.campaigns[0]
    if cfg.campaigns:
        return _unique(cfg.campaigns), cfg.campaigns[0]
    if catalogue is None:
        raise JobFailed(
            "no current campaign defined: the request names no campaigns, "
            f"{SECTION} campaigns is empty and no catalogue_url is set to ask"
        )
    try:
        rows = catalogue.campaigns()
    except CatalogueError as exc:
        raise JobFailed(
            f"no current campaign defined: cannot read campaigns from the catalogue: {exc}"
        ) from None
    by_lifecycle: dict[str, list[str]] = {}
    for row in rows:
        version, lifecycle = row.get("version"), row.get("lifecycle")
        if isinstance(version, str) and isinstance(lifecycle, str):
            by_lifecycle.setdefault(lifecycle, []).append(version)
    current = by_lifecycle.get("current", [])
    if len(current) != 1:
        found = "none" if not current else ", ".join(current)
        raise JobFailed(
            f"no current campaign defined: the catalogue lists {found} with "
            "lifecycle 'current' (expected exactly one)"
        )
    versions = [v for life in REFRESHED_LIFECYCLES for v in by_lifecycle.get(life, [])]
    return _unique(versions), current[0]


@attrs.define
class Run:
    """What one job did, campaign by campaign: the event's data and its error clauses."""

    job: Job
    cfg: SnapshotConfig
    errors: list[str] = attrs.Factory(list)
    summary: dict[str, dict[str, Any]] = attrs.Factory(dict)

    def fail(self, version: str, clause: str) -> None:
        self.job.log.error("{}: {}", version, clause)
        self.errors.append(f"{version}: {clause}")

    def campaign(
        self,
        rucio: Rucio,
        pool: ThreadPoolExecutor,
        version: str,
        catalogue: Catalogue | None,
        current: bool,
    ) -> None:
        cfg, log = self.cfg, self.job.log
        if not cachefiles.is_version(version):
            # The request's and the configuration's versions were checked as input; the
            # catalogue's were not, and a version names files and a Rucio query.
            self.fail(
                shown(version),
                "not a campaign version like 26.02.0 (as the catalogue lists it): not refreshed",
            )
            return
        info: dict[str, Any] = self.summary.setdefault(version, {"current": current})
        try:
            snap = fetch_campaign(rucio, pool, cfg.scope, version, cfg.stages)
        except Exception as exc:  # noqa: BLE001 - one campaign never sinks the others
            self.fail(version, f"fetch failed: {describe(exc)}")
            return
        broken_stages, broken_datasets = stage_errors(snap), dataset_errors(snap)
        info["datasets"] = sum(e["count"] for e in snap["campaigns"].values())
        info["dataset_errors"] = len(broken_datasets)
        if len(broken_stages) == len(snap["campaigns"]):
            detail = "; ".join(f"{k}: {e}" for k, e in broken_stages.items())
            self.fail(version, f"every stage failed, previous snapshot kept ({detail})")
            return
        path = cachefiles.snapshot_path(self.job.cache_dir, version)
        try:
            cachefiles.write_json_atomic(path, snap)
        except OSError as exc:
            self.fail(version, f"cannot write {path}: {exc}")
            return
        info["snapshot"] = str(path)
        log.info("{}: {} datasets written to {}", version, info["datasets"], path)
        for key, err in broken_stages.items():
            self.fail(version, f"stage {key} failed: {err}")
        if broken_datasets:
            listed = "; ".join(
                f"{did}: {err}" for did, err in list(broken_datasets.items())[:SHOWN_DATASET_ERRORS]
            )
            more = len(broken_datasets) - SHOWN_DATASET_ERRORS
            self.fail(
                version,
                f"{len(broken_datasets)} dataset(s) failed ({listed}"
                + (f"; {more} more in the snapshot)" if more > 0 else ")"),
            )
        if current and catalogue is not None:
            if broken_stages:
                self.fail(
                    version,
                    "catalogue not updated: the snapshot lacks stage(s) "
                    + ", ".join(broken_stages),
                )
                return
            self.publish(version, snap, catalogue, info)

    def publish(
        self, version: str, snap: dict[str, Any], catalogue: Catalogue, info: dict[str, Any]
    ) -> None:
        """Match the snapshot onto the campaign's tasks; write the matches; PATCH each task."""
        try:
            tasks = sorted(catalogue.tasks(version), key=lambda t: t["name"])
        except CatalogueError as exc:
            self.fail(version, f"catalogue: {exc}")
            return
        matching = match_snapshot(snap, tasks)
        path = cachefiles.matches_path(self.job.cache_dir, version)
        doc = {
            "fetched_at": snap["fetched_at"],
            "scope": snap["scope"],
            "campaign_name": version,
            "tasks": [
                {
                    "name": t["name"],
                    "filters": task_filters(t).as_dict(),
                    "outputs": matching.outputs[t["name"]],
                }
                for t in tasks
            ],
            "unmatched": matching.unmatched,
        }
        try:
            cachefiles.write_json_atomic(path, doc)
            info["matches"] = str(path)
        except OSError as exc:
            self.fail(version, f"cannot write {path}: {exc}")
        info["tasks"] = len(tasks)
        info["unmatched"] = len(matching.unmatched)
        failed = []
        for task in tasks:
            try:
                catalogue.replace_outputs(task, matching.outputs[task["name"]])
            except CatalogueError as exc:
                failed.append(str(exc))
        info["tasks_updated"] = len(tasks) - len(failed)
        if failed:
            self.fail(
                version,
                f"catalogue: {len(failed)} of {len(tasks)} task(s) not "
                f"updated ({failed[0]}" + ("; ...)" if len(failed) > 1 else ")"),
            )


def update_snapshots(inp: SnapshotInput, job: Job) -> Outcome:
    """Refresh the snapshots; publish the current campaign's matches to the catalogue."""
    cfg = job.config if job.config is not None else SnapshotConfig()
    access = rucio_access(cfg, job)
    catalogue = catalogue_of(cfg, inp, job)
    versions, current = campaigns_to_refresh(inp, cfg, catalogue)
    job.log.info(
        "refreshing {} (current {}), {} requests in flight",
        ", ".join(v if cachefiles.is_version(v) else shown(v) for v in versions),
        current if cachefiles.is_version(current) else shown(current),
        cfg.parallel,
    )
    run = Run(job, cfg)
    # The login token lives in the job's private directory and goes with it.
    with job.private_dir() as tokens, ThreadPoolExecutor(cfg.parallel, "rucio-fetch") as pool:
        try:
            rucio = Rucio(access, tokens.path)
        except RucioUnavailable as exc:
            raise JobFailed(str(exc), current_campaign=current, snapshots={}) from None
        for version in versions:
            run.campaign(rucio, pool, version, catalogue, current=version == current)
    if run.errors:
        raise JobFailed("; ".join(run.errors), current_campaign=current, snapshots=run.summary)
    return Outcome.ok(current_campaign=current, snapshots=run.summary)
