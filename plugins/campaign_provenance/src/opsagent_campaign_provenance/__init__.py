"""Capability ``campaign_provenance_sweep``: requested EVGEN paths joined to RECO in Rucio.

The declaration below is the whole contract with the host.  The doer is
:func:`opsagent_campaign_provenance.campaigns.sweep_campaigns`, its settings
:class:`opsagent_campaign_provenance.config.ProvenanceConfig`; ``requested`` checks
the catalogue's paths, ``sweep`` reads Rucio, ``provenance`` joins and gives each path
its status, ``cachefile`` writes the cache.  Rucio login, the catalogue client and the
bulk replica fetch are ``rucio_snapshot``'s: same Rucio, same catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from opsagent import Capability, hookimpl, pattern
from opsagent_rucio_snapshot.fields import campaign, each

from opsagent_campaign_provenance.campaigns import CREDENTIAL, sweep_campaigns
from opsagent_campaign_provenance.config import ProvenanceConfig
from opsagent_campaign_provenance.requested import DETECTOR, PATH_FILTER

__all__ = ["CAPABILITY", "ProvenanceConfig", "ProvenanceInput", "register_capabilities"]
__version__ = "0.1.0"


@attrs.frozen
class ProvenanceInput:
    """The request: which campaign (default: the catalogue's), which part of it."""

    created_by: str | None = attrs.field(
        default=None, metadata={"description": "who asked (sent to the catalogue as X-Remote-User)"}
    )
    campaign: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(campaign),
        metadata={
            "description": "the campaign version to sweep; default: the catalogue's campaigns "
            "with a lifecycle in the configured lifecycles"
        },
    )
    detector_configs: list[str] | None = attrs.field(
        default=None,
        validator=each(
            pattern(DETECTOR, "a detector configuration like epic_craterlake"), non_empty=True
        ),
        metadata={"description": "only these detector configurations; default: all"},
    )
    path_filter: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            pattern(PATH_FILTER, "whole segments of an EVGEN path like DIS/NC")
        ),
        metadata={
            "description": "only EVGEN paths /volatile/eic/EPIC/EVGEN/<path_filter>[/...] "
            "(whole segments); default: all"
        },
    )


def _echo(inp: ProvenanceInput) -> dict[str, Any]:
    return {k: v for k, v in (("created_by", inp.created_by), ("campaign", inp.campaign)) if v}


CAPABILITY = Capability(
    msg_type="campaign_provenance_sweep",
    input=ProvenanceInput,
    doer=sweep_campaigns,
    # One event whatever happens: {"msg_type": "provenance_ready", "ok": ..., "counts", ...}.
    events={"ok": "provenance_ready", "error": "provenance_ready"},
    action="provenance_sweep",
    time_limit=900,
    credentials=(CREDENTIAL,),
    dedup_key=lambda _inp: "global",  # one sweep at a time: they write the same files
    echo=_echo,
    concurrency=1,
    config=ProvenanceConfig,
    description="For each EVGEN path the catalogue lists as requested for a campaign, "
    "find the RECO datasets produced from it in Rucio, their replicas and file counts on "
    "the configured RSEs, and a status (complete, partial, missing; unexpected for RECO "
    "nobody requested), into $SWF_TMP_DIR/provenance/<campaign>.json.",
    samples=(
        {},
        {"campaign": "26.02.0", "detector_configs": ["epic_craterlake"], "path_filter": "DIS/NC"},
    ),
)


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(CAPABILITY)
