"""Capability ``rucio_snapshot_update``: Rucio campaign snapshots matched onto tasks.

The declaration below is the whole contract with the host.  The doer is
:func:`opsagent_rucio_snapshot.update.update_snapshots`, its settings
:class:`opsagent_rucio_snapshot.config.SnapshotConfig`; ``fetch`` reads Rucio,
``match`` pairs datasets with tasks, ``catalogue`` speaks to PCS, ``cachefiles`` writes
the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from opsagent import Capability, hookimpl

from opsagent_rucio_snapshot.config import SnapshotConfig
from opsagent_rucio_snapshot.fields import campaign, each
from opsagent_rucio_snapshot.update import CREDENTIAL, update_snapshots

__all__ = ["CAPABILITY", "SnapshotConfig", "SnapshotInput", "register_capabilities"]
__version__ = "0.1.0"


@attrs.frozen
class SnapshotInput:
    """The request: who asked, and optionally which campaigns (the first is the current one)."""

    created_by: str | None = attrs.field(
        default=None, metadata={"description": "who pressed 'Update from Rucio'"}
    )
    campaigns: list[str] | None = attrs.field(
        default=None,
        validator=each(campaign, non_empty=True),
        metadata={
            "description": "campaign versions to refresh, the current one first; "
            "default: from configuration, else from the catalogue"
        },
    )


def _echo(inp: SnapshotInput) -> dict[str, Any]:
    return {"created_by": inp.created_by} if inp.created_by else {}


CAPABILITY = Capability(
    msg_type="rucio_snapshot_update",
    input=SnapshotInput,
    doer=update_snapshots,
    # One event whatever happens: {"msg_type": "rucio_snapshot_ready", "ok": ..., "error"?}.
    events={"ok": "rucio_snapshot_ready", "error": "rucio_snapshot_ready"},
    time_limit=900,
    time_limit_env="EPICPROD_RUCIO_SNAPSHOT_TIMEOUT",
    credentials=(CREDENTIAL,),
    dedup_key=lambda _inp: "global",  # one snapshot run at a time, whoever asks
    echo=_echo,
    # The old agent's action record (username: created_by).
    action="rucio_sweep",
    sublevel="high",
    live_default=True,
    concurrency=1,
    config=SnapshotConfig,
    description="Refresh the Rucio snapshots of the production campaigns under "
    "$SWF_TMP_DIR/rucio-snapshots/ and replace each requested task's outputs "
    "in the catalogue with the datasets that match it.",
    samples=({}, {"created_by": "operator", "campaigns": ["26.02.0", "25.12.0"]}),
)


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(CAPABILITY)
