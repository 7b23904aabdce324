"""The declaration of ``rucio_snapshot_update`` (entry point ``opsagent.capabilities``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opsagent.capability import Capability
from opsagent.hookspecs import hookimpl

from opsagent_rucio_snapshot.inputs import SnapshotConfig, SnapshotInput
from opsagent_rucio_snapshot.update import CREDENTIAL, update_snapshots


def _echo(inp: SnapshotInput) -> dict[str, Any]:
    return {"created_by": inp.created_by} if inp.created_by else {}


CAPABILITY = Capability(
    msg_type="rucio_snapshot_update",
    input=SnapshotInput,
    doer=update_snapshots,
    # One event whatever happens: {"msg_type": "rucio_snapshot_ready", "ok": ..., "error"?}.
    events={"ok": "rucio_snapshot_ready", "error": "rucio_snapshot_ready"},
    time_limit=900,
    credentials=(CREDENTIAL,),
    dedup_key=lambda _inp: "global",  # one snapshot run at a time, whoever asks
    echo=_echo,
    concurrency=1,
    isolation="process",
    config=SnapshotConfig,
    description="Refresh the Rucio snapshots of the production campaigns under "
    "$SWF_TMP_DIR/rucio-snapshots/ and replace each requested task's outputs "
    "in the catalogue with the datasets that match it.",
    samples=({}, {"created_by": "operator", "campaigns": ["26.02.0", "25.12.0"]}),
)


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(CAPABILITY)
