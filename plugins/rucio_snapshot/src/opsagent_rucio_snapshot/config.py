"""``[capability.rucio_snapshot_update]``: where Rucio and the catalogue are, how to
reach them, and the limits."""

from __future__ import annotations

from typing import Any, Protocol

import attrs
from opsagent import FieldError, between, from_env, pattern, positive

from opsagent_rucio_snapshot.fields import SCOPE, STAGE, campaign, each


def _not_negative(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise FieldError(attr.name, f"expected 0 or more seconds, got {value!r}")


class RucioSettings(Protocol):
    """The settings :func:`opsagent_rucio_snapshot.update.rucio_access` reads: any
    capability's configuration class with these fields can log in the same way."""

    @property
    def rucio_url(self) -> str: ...
    @property
    def rucio_account(self) -> str: ...
    @property
    def rucio_username(self) -> str: ...
    @property
    def rucio_vo(self) -> str | None: ...
    @property
    def rucio_tls_verify(self) -> bool | None: ...
    @property
    def rucio_ca_bundle(self) -> str | None: ...
    @property
    def request_timeout(self) -> float: ...


@attrs.frozen
class SnapshotConfig:
    """``[capability.rucio_snapshot_update]``.

    ``*_tls_verify`` has no default on purpose: for an ``https`` URL the job refuses to
    run until it is set, to ``true`` (optionally with ``*_ca_bundle``) or knowingly to
    ``false``; the choice is logged on every run.  ``campaigns``, when set, replaces the
    catalogue's list (the first is the current campaign).  Empty URL, account or user
    name fall back to ``JLAB_RUCIO_URL``, ``JLAB_RUCIO_ACCOUNT``, ``JLAB_RUCIO_USERNAME``
    and ``SWF_MONITOR_HTTP_URL`` in the job's environment (see ``[host] env_allow``).
    """

    rucio_url: str = from_env("JLAB_RUCIO_URL", default="")
    rucio_account: str = from_env("JLAB_RUCIO_ACCOUNT", default="")
    rucio_username: str = from_env("JLAB_RUCIO_USERNAME", default="")
    rucio_vo: str | None = None
    rucio_tls_verify: bool | None = None
    rucio_ca_bundle: str | None = None
    scope: str = attrs.field(default="epic", validator=pattern(SCOPE, "a Rucio scope"))
    stages: list[str] = attrs.field(
        factory=lambda: ["RECO", "FULL"],
        validator=each(pattern(STAGE, "a stage name like RECO"), non_empty=True),
    )
    campaigns: list[str] = attrs.field(factory=list, validator=each(campaign))
    catalogue_url: str = from_env("SWF_MONITOR_HTTP_URL", default="")
    #: Sent as ``X-Remote-User`` when the request names no ``created_by``.
    catalogue_user: str | None = None
    catalogue_tls_verify: bool | None = None
    catalogue_ca_bundle: str | None = None
    catalogue_timeout: float = attrs.field(default=30.0, validator=positive)
    #: Tries of each catalogue request answered 429/502/503/504, refused or timed out.
    catalogue_tries: int = attrs.field(default=3, validator=between(1, 10, "tries"))
    #: Seconds before the second try, doubling after (a Retry-After answer is honoured).
    catalogue_backoff: float = attrs.field(default=1.0, validator=_not_negative)
    #: Rucio requests in flight at once (each asks for the replicas of up to 100 datasets).
    parallel: int = attrs.field(default=16, validator=between(1, 256, "requests in flight"))
    request_timeout: float = attrs.field(default=60.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        for side in ("rucio", "catalogue"):
            if getattr(self, f"{side}_tls_verify") is False and getattr(self, f"{side}_ca_bundle"):
                raise ValueError(
                    f"{side}_ca_bundle is set but {side}_tls_verify is false: remove one of them"
                )
