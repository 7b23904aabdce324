"""``catalog_sync``: the old agent's nightly chain of 14 steps, as a chain.

Each step is the capability of the same name (``catalog_import_csv`` is
``catalog_import`` with ``source = "csv"``; ``credential_expiry_check`` is the host's
own), run by the host as a job of its own -- journaled, deduplicated against a request
of the same step, killed at its own time limit, with its own event and action record --
and the summary record ``catalog_sync`` says ``steps`` and which ``failed``.  Unlike the
old chain, a step whose doer exits non-zero counts as failed (see docs/chains.md).

``dataset_definitions_sweep`` -- a step the old agent ran directly, with no message type
of its own -- is declared here as a program capability (and so is also a request).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from opsagent import Capability, Chain, Program, Step, arg, hookimpl

from opsagent_epicprod import fields
from opsagent_epicprod.config import EpicprodConfig

#: What every doer is given from the host's environment besides [host] env_allow.
DJANGO_ENV = ("DJANGO_SETTINGS_MODULE", "SWF_MONITOR_URL", "SWF_MONITOR_HTTP_URL")


@attrs.frozen
class SweepIn:
    """Who asked (``created_by``), recorded by the doer."""

    created_by: str | None = fields.created_by()

    @property
    def by(self) -> str:
        return self.created_by or "dataset_definitions_sweep"


@attrs.frozen
class CatalogSyncIn:
    """Who asked: passed as ``created_by`` to every step that takes one."""

    created_by: str = attrs.field(default="catalog_sync", validator=fields.user)


DEFINITIONS_SWEEP = Program(
    msg_type="dataset_definitions_sweep",
    input=SweepIn,
    argv=("{python}", "-m", "pcs.definitions_sweep", "--apply", "--created-by", arg("by")),
    cwd="{monitor_root}",
    env=DJANGO_ENV,
    config=EpicprodConfig,
    config_section="epicprod",
    # Hard-coded in the old agent (no EPICPROD_* variable).
    time_limit=900,
    dedup_key="dataset_definitions_sweep",
    stdout="last_json",
    result="summary",
    events={"ok": "dataset_definitions_sweep_done", "error": "dataset_definitions_sweep_done"},
    action="dataset_definitions_sweep",
    name="pcs.definitions_sweep",
    description="Sweep the PCS dataset definitions (python -m pcs.definitions_sweep --apply); "
    "its last stdout line is a JSON summary, in the event as summary.",
    samples=({}, {"created_by": "catalog_sync"}),
)

#: The old chain's steps, in its order (LEGACY "Other handlers" 9).
STEPS = (
    Step("credential_expiry_check"),
    Step("catalog_import", name="catalog_import_csv", input={"source": "csv"}),
    Step("epic_prod_past_import"),
    Step("questionnaire_import"),
    Step("association_sweep"),
    Step("rucio_snapshot_update"),
    Step("rucio_arrivals_sweep"),
    Step("evgen_rucio_update"),
    Step("dataset_definitions_sweep"),
    Step("questionnaire_automatch"),
    Step("questionnaire_match_update"),
    Step("campaign_progress_refresh"),
    Step("file_events_measure"),
    Step("delivery_daily_rebuild"),
)

CATALOG_SYNC = Chain(
    msg_type="catalog_sync",
    input=CatalogSyncIn,
    steps=STEPS,
    events={"ok": "catalog_sync_done", "error": "catalog_sync_done"},
    action="catalog_sync",
    sublevel="high",
    live_default=True,
    description="The nightly catalogue sync: 14 steps in order, each a job of its own; "
    "the summary record (steps, failed) is the catalogue-freshness timestamp.",
    samples=({}, {"created_by": "cron"}),
)


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(DEFINITIONS_SWEEP.capability())
    register(CATALOG_SYNC)
