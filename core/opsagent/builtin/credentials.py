"""``credential_expiry_check``: the host's own credential check, as a capability.

The first step of the nightly ``catalog_sync`` chain (and a request of its own): every
credential this host knows -- configured under ``[credentials]`` or declared by one of
its capabilities -- looked at with the one expiry check ``opsagent selftest`` uses
(:func:`opsagent.credentials.store.expiry`).  The event carries the old doer's JSON
shape, ``{"credentials": [{"credential", "status", "days_left"}]}`` (plus ``detail``),
and the outcome is ``ok``, ``warning`` (one expires within ``warning_days``) or
``error`` (one is expired, missing or refused), as the old doer's exit status 0 / 3 /
other was.  It runs in the host (``thread``): the job's config is the host's view of
its credentials, nothing else of the host.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from opsagent.credentials import store as creds
from opsagent.job import Job
from opsagent.outcome import JobFailed, Outcome

MSG_TYPE = "credential_expiry_check"


@attrs.frozen
class ExpiryInput:
    created_by: str | None = None
    #: Days before an expiry that count as a warning.
    warning_days: float = attrs.field(default=1.0)

    @warning_days.validator
    def _positive(self, _attr: attrs.Attribute, value: float) -> None:
        if not 0 <= value <= 365:
            raise ValueError(f"expected 0 to 365 days, got {value}")


@attrs.frozen
class HostCredentials:
    """What the host hands this capability's jobs: its credential sources, and which
    credentials its capabilities declare (name -> optional for every capability)."""

    sources: Mapping[str, creds.CredentialSource]
    declared: Mapping[str, bool]


def host_credentials(
    sources: Mapping[str, creds.CredentialSource], capabilities: Mapping[str, object]
) -> HostCredentials:
    declared: dict[str, bool] = {}
    for cap in capabilities.values():
        for name in getattr(cap, "credentials", ()):
            optional = name in getattr(cap, "optional_credentials", ())
            declared[name] = declared.get(name, True) and optional
    for name in sources:
        declared.setdefault(name, False)
    return HostCredentials(sources=dict(sources), declared=declared)


def check_expiry(inp: ExpiryInput, job: Job) -> Outcome:
    view = job.config
    if not isinstance(view, HostCredentials):
        raise JobFailed(f"{MSG_TYPE} runs only in the host (its config is {view!r})")
    found = [
        creds.expiry(name, view.sources, optional=optional, warning=inp.warning_days * 86400)
        for name, optional in sorted(view.declared.items())
    ]
    report = [
        {
            "credential": f.credential,
            "status": f.status,
            "days_left": f.days_left,
            "detail": f.detail,
        }
        for f in found
    ]
    bad = [f for f in found if f.level == "error"]
    soon = [f for f in found if f.level == "warning"]
    if bad:
        return Outcome.error(
            "; ".join(f"{f.credential}: {f.status}" for f in bad), credentials=report
        )
    if soon:
        return Outcome.warning(
            "; ".join(f"{f.credential} expires in {f.days_left} day(s)" for f in soon),
            credentials=report,
        )
    return Outcome.ok(credentials=report)
