"""What a request may say (:class:`SnapshotInput`) and what the host configures
(:class:`SnapshotConfig`, the ``[capability.rucio_snapshot_update]`` table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, IterableValidationNote
from opsagent.schema import FieldError, pattern

CAMPAIGN = r"[0-9]{2}\.[0-9]{2}\.[0-9]{1,3}"
STAGE = r"[A-Z][A-Z0-9_]{0,31}"
SCOPE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,29}"


def _field_error(inst: Any, attr: attrs.Attribute, errors: list[Exception]) -> Exception:
    # Shaped like cattrs' own errors so opsagent.schema reports "$.<field>[<i>]: ...".
    group = cattrs.IterableValidationError(attr.name, errors, list)
    group.__notes__ = [AttributeValidationNote(f"attribute {attr.name}", attr.name, list)]
    return cattrs.ClassValidationError(f"While checking {type(inst).__name__}", [group], type(inst))


def each(
    check: Callable[[Any, attrs.Attribute, Any], None], *, non_empty: bool = False
) -> Callable[[Any, attrs.Attribute, Any], None]:
    """Apply ``check`` to every item of a list, reporting each bad item by index."""

    def validate(inst: Any, attr: attrs.Attribute, value: list[Any] | None) -> None:
        if value is None:
            return
        errors: list[Exception] = []
        if non_empty and not value:
            err = ValueError("expected at least one item (leave the field out instead)")
            raise _field_error(inst, attr, [err]) from None
        for i, item in enumerate(value):
            try:
                check(inst, attr, item)
            except ValueError as exc:
                # A plain error: the notes below carry the path (field and index).
                item_error = ValueError(str(exc))
                item_error.__notes__ = [IterableValidationNote(f"@ index {i}", i, type(item))]
                errors.append(item_error)
        if errors:
            raise _field_error(inst, attr, errors)

    return validate


_campaign = pattern(CAMPAIGN, "a campaign version like 26.02.0")


@attrs.frozen
class SnapshotInput:
    """The request: who asked, and optionally which campaigns (the first is the current one)."""

    created_by: str | None = attrs.field(
        default=None, metadata={"description": "who pressed 'Update from Rucio'"}
    )
    campaigns: list[str] | None = attrs.field(
        default=None,
        validator=each(_campaign, non_empty=True),
        metadata={
            "description": "campaign versions to refresh, the current one first; "
            "default: from configuration, else from the catalogue"
        },
    )


def _positive(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise FieldError(attr.name, f"expected a positive number, got {value!r}")


def _not_negative(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise FieldError(attr.name, f"expected 0 or more seconds, got {value!r}")


def _tries(_inst: Any, attr: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= 10:
        raise FieldError(attr.name, f"expected 1 to 10 tries, got {value!r}")


def _parallel(_inst: Any, attr: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= 256:
        raise FieldError(attr.name, f"expected 1 to 256 requests in flight, got {value!r}")


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

    rucio_url: str = ""
    rucio_account: str = ""
    rucio_username: str = ""
    rucio_vo: str | None = None
    rucio_tls_verify: bool | None = None
    rucio_ca_bundle: str | None = None
    scope: str = attrs.field(default="epic", validator=pattern(SCOPE, "a Rucio scope"))
    stages: list[str] = attrs.field(
        factory=lambda: ["RECO", "FULL"],
        validator=each(pattern(STAGE, "a stage name like RECO"), non_empty=True),
    )
    campaigns: list[str] = attrs.field(factory=list, validator=each(_campaign))
    catalogue_url: str = ""
    #: Sent as ``X-Remote-User`` when the request names no ``created_by``.
    catalogue_user: str | None = None
    catalogue_tls_verify: bool | None = None
    catalogue_ca_bundle: str | None = None
    catalogue_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Tries of each catalogue request answered 429/502/503/504, refused or timed out.
    catalogue_tries: int = attrs.field(default=3, validator=_tries)
    #: Seconds before the second try, doubling after (a Retry-After answer is honoured).
    catalogue_backoff: float = attrs.field(default=1.0, validator=_not_negative)
    #: Rucio requests in flight at once (each asks for the replicas of up to 100 datasets).
    parallel: int = attrs.field(default=16, validator=_parallel)
    request_timeout: float = attrs.field(default=60.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        for side in ("rucio", "catalogue"):
            if getattr(self, f"{side}_tls_verify") is False and getattr(self, f"{side}_ca_bundle"):
                raise ValueError(
                    f"{side}_ca_bundle is set but {side}_tls_verify is false: remove one of them"
                )
