"""``[capability.campaign_provenance_sweep]``: Rucio, the catalogue, the RSEs, the limits."""

from __future__ import annotations

import attrs
from opsagent import between, pattern, positive
from opsagent_rucio_snapshot.fields import SCOPE, STAGE, each

from opsagent_campaign_provenance.sweep import MAX_DATASETS

RSE = r"[A-Z0-9][A-Z0-9_-]{0,63}"
LIFECYCLE = r"[a-z][a-z_]{0,31}"


@attrs.frozen
class ProvenanceConfig:
    """``[capability.campaign_provenance_sweep]``.

    The Rucio and catalogue settings mean what they mean for ``rucio_snapshot_update``
    (the same fallbacks to ``JLAB_RUCIO_*`` and ``SWF_MONITOR_HTTP_URL``, the same
    refusal of an ``https`` URL whose TLS verification is not chosen).  ``rses`` are
    the RSEs a path must be complete on; ``lifecycles`` the catalogue's campaigns swept
    when the request names none.
    """

    rucio_url: str = ""
    rucio_account: str = ""
    rucio_username: str = ""
    rucio_vo: str | None = None
    rucio_tls_verify: bool | None = None
    rucio_ca_bundle: str | None = None
    scope: str = attrs.field(default="epic", validator=pattern(SCOPE, "a Rucio scope"))
    #: The stage whose datasets are the produced outputs: ``/<stage>/<campaign>/...``.
    stage: str = attrs.field(default="RECO", validator=pattern(STAGE, "a stage name like RECO"))
    #: The RSEs a path must have every file on to be ``complete``.
    rses: list[str] = attrs.field(
        factory=lambda: ["BNL-XRD", "EIC-XRD"],
        validator=each(pattern(RSE, "an RSE name like BNL-XRD"), non_empty=True),
    )
    #: The catalogue's campaigns swept when the request names none, by lifecycle.
    lifecycles: list[str] = attrs.field(
        factory=lambda: ["current", "last", "producing"],
        validator=each(pattern(LIFECYCLE, "a lifecycle like current"), non_empty=True),
    )
    #: Where the requested paths come from (required; else ``SWF_MONITOR_HTTP_URL``).
    catalogue_url: str = ""
    catalogue_user: str | None = None
    catalogue_tls_verify: bool | None = None
    catalogue_ca_bundle: str | None = None
    catalogue_timeout: float = attrs.field(default=30.0, validator=positive)
    catalogue_tries: int = attrs.field(default=3, validator=between(1, 10, "tries"))
    catalogue_backoff: float = attrs.field(default=1.0, validator=between(0, 60, "seconds"))
    #: Rucio requests in flight at once (each asks for the replicas of up to 100 datasets).
    parallel: int = attrs.field(default=16, validator=between(1, 256, "requests in flight"))
    request_timeout: float = attrs.field(default=60.0, validator=positive)
    #: Datasets one campaign's listing may hold: a Rucio answer beyond it fails the
    #: sweep (the previous file stays) instead of filling the host's memory.
    max_datasets: int = attrs.field(
        default=MAX_DATASETS, validator=between(1, 10_000_000, "datasets")
    )

    def __attrs_post_init__(self) -> None:
        for side in ("rucio", "catalogue"):
            if getattr(self, f"{side}_tls_verify") is False and getattr(self, f"{side}_ca_bundle"):
                raise ValueError(
                    f"{side}_ca_bundle is set but {side}_tls_verify is false: remove one of them"
                )
