"""The old agent's 15 doer-backed message types, each a program capability.

Every declaration below is the whole contract with the host: the input rules, the doer's
argv (run in ``[epicprod] monitor_root`` with ``[epicprod] python``), the time limit and
the old agent's ``EPICPROD_*_TIMEOUT`` variable, the dedup key, the stdout protocol, the
event and the action id, as docs/epicprod.md tabulates them.  Where the old agent had a
defect (docs/epicprod.md, "Fixed"), the declaration says so.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
from opsagent import (
    Capability,
    Digits,
    FieldError,
    Outcome,
    Program,
    arg,
    flag,
    hookimpl,
    option,
    pattern,
)

from opsagent_epicprod import delivery, fields
from opsagent_epicprod.config import EpicprodConfig

__all__ = [
    "PROGRAMS",
    "EpicprodConfig",
    "capabilities",
    "quiet_capture",
    "register_capabilities",
]
__version__ = "0.1.0"

PY = "{python}"
MANAGE = "src/manage.py"
#: What every doer is given from the host's environment besides [host] env_allow.
DJANGO_ENV = ("DJANGO_SETTINGS_MODULE", "SWF_MONITOR_URL", "SWF_MONITOR_HTTP_URL")


def _program(**kw: Any) -> Program:
    kw.setdefault("config", EpicprodConfig)
    kw.setdefault("config_section", "epicprod")
    kw.setdefault("cwd", "{monitor_root}")
    kw.setdefault("env", DJANGO_ENV)
    return Program(**kw)


def _done(msg_type: str) -> dict[str, str]:
    """The event of a type the old agent announced nowhere (additive: every job ends with
    an event here)."""
    return {"ok": f"{msg_type}_done", "error": f"{msg_type}_done"}


def _same(event: str) -> dict[str, str]:
    return {"ok": event, "error": event}


# -- sync_epicprod_inventory ------------------------------------------------------------------


def _one_subject(inst: Any, _attr: attrs.Attribute, _value: Any) -> None:
    if not (inst.pandaid or inst.jeditaskid or inst.task_name):
        raise FieldError("pandaid", "one of pandaid, jeditaskid or task_name is required")


@attrs.frozen
class InventoryIn:
    """One of ``pandaid``, ``jeditaskid``, ``task_name`` (the first given is used)."""

    pandaid: Digits | None = None
    jeditaskid: Digits | None = None
    task_name: str | None = attrs.field(
        default=None,
        validator=[attrs.validators.optional(fields.task_name), _one_subject],
    )

    @property
    def by_pandaid(self) -> str | None:
        return self.pandaid or None

    @property
    def by_jeditaskid(self) -> str | None:
        return None if self.pandaid else (self.jeditaskid or None)

    @property
    def by_task(self) -> str | None:
        return None if (self.pandaid or self.jeditaskid) else self.task_name

    @property
    def subject(self) -> str:
        if self.pandaid:
            return f"pandaid:{self.pandaid}"
        if self.jeditaskid:
            return f"jeditaskid:{self.jeditaskid}"
        return f"task:{self.task_name}"


# -- refresh_system_status --------------------------------------------------------------------


@attrs.frozen
class SystemStatusIn:
    """Optionally which systems (``selected`` or ``only``: a name or a list), and the source."""

    selected: Any = attrs.field(
        default=None,
        validator=fields.names,
        metadata={"description": "a system name or a list of them (else: all)"},
    )
    only: Any = attrs.field(
        default=None,
        validator=fields.names,
        metadata={"description": "the same as selected, which wins"},
    )
    source: str | None = attrs.field(default=None, validator=attrs.validators.optional(fields.name))

    @property
    def systems(self) -> list[str]:
        chosen = self.selected or self.only or []
        return [chosen] if isinstance(chosen, str) else list(chosen)

    @property
    def source_or_agent(self) -> str:
        return self.source or "ops_agent"

    @property
    def systems_key(self) -> str:
        # The periodic refresh (no `only`) and a manual full refresh share
        # refresh_system_status:all (the old agent's periodic key differed: fixed).
        return ",".join(sorted(set(self.systems))) or "all"


# -- capture_system_snap ----------------------------------------------------------------------

ISO = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]{2,20}(Z|[+-][0-9]{2}:?[0-9]{2})?"


@attrs.frozen
class SnapIn:
    """``scope`` (``testbed``, ``epicprod`` or ``all``); ``manual`` false for the periodic run."""

    scope: Literal["testbed", "epicprod", "all"] = "all"
    manual: bool = True
    requested_at: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(pattern(ISO, "an ISO 8601 time")),
    )
    source: str | None = attrs.field(default=None, validator=attrs.validators.optional(fields.name))

    @property
    def requested_at_or_now(self) -> str:
        return self.requested_at or datetime.now(UTC).isoformat()

    @property
    def snap_key(self) -> str:
        return f"snapper_capture_manual_{self.scope}" if self.manual else "snapper_capture_periodic"


def _snap_event(inp: SnapIn, result: Any, outcome: Outcome) -> Outcome | dict[str, Any]:
    """``results`` as the doer printed them; a result ``failed`` fails the capture.
    ``captured`` (additive) says whether anything was captured: a periodic run that is
    ok and captured nothing is the one the old agent kept quiet."""
    results = result.parsed if isinstance(result.parsed, list) else []
    captured = any(isinstance(r, dict) and r.get("outcome") == "snap" for r in results)
    failed = [r for r in results if isinstance(r, dict) and r.get("outcome") == "failed"]
    if outcome.status == "ok" and failed:
        reason = "; ".join(f"{r.get('scope')}: {r.get('error') or 'failed'}" for r in failed)
        return Outcome.error(reason, results=results, captured=captured)
    return {"captured": captured}


def quiet_capture(inp: SnapIn, outcome: Outcome) -> bool:
    """The old snapper's rule (LEGACY.md, handler 6): a capture's event and action record
    are sent only when it was manual, failed, or captured something.  True for the one
    that stays quiet: a periodic (``manual: false``) capture that ended ``ok`` having
    captured nothing.  ``capture_system_snap``'s ``quiet``, whoever sent the periodic
    capture (the host's schedule, a cron job); a request that waits for a reply is always
    answered."""
    return not inp.manual and outcome.status == "ok" and not outcome.data.get("captured")


# -- the others --------------------------------------------------------------------------------


@attrs.frozen
class ByIn:
    """Who asked (``created_by``), recorded by the doer."""

    created_by: str | None = fields.created_by()


def _by(default: str) -> type:
    """An input class whose ``by`` is ``created_by`` or the old agent's default."""

    @attrs.frozen
    class In(ByIn):
        @property
        def by(self) -> str:
            return self.created_by or default

    In.__name__ = In.__qualname__ = f"ByIn_{default}"
    return In


@attrs.frozen
class SweepIn:
    """``days`` back to look (default ``[epicprod] association_sweep_days``), who asked."""

    days: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.ge(1), attrs.validators.le(3650)]),
    )
    created_by: str | None = fields.created_by()


@attrs.frozen
class AutomatchIn:
    """Who asked; ``all`` rematches every request, not only the unmatched ones."""

    created_by: str | None = fields.created_by()
    all: bool = False

    @property
    def by(self) -> str:
        return self.created_by or "automatch"


@attrs.frozen
class CatalogImportIn:
    """``source``: ``csv`` or ``epic-prod`` (validated here: the old agent passed anything)."""

    source: Literal["csv", "epic-prod"]
    created_by: str | None = fields.created_by()


@attrs.frozen
class AssessmentIn:
    """The harness's completion callback: ``job_id`` and what it knows of the run."""

    job_id: Any = fields.ident(required=True)
    prompt_group_id: Any = fields.ident(required=False)
    page_group_id: Any = fields.ident(required=False)
    status: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(pattern(fields.WORD, "a status word")),
    )
    timing: dict[str, Any] | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(dict)),
        metadata={"description": "the run's timings, passed on as the old agent did"},
    )

    @property
    def job_id_text(self) -> str:
        return str(self.job_id)

    @property
    def prompt_group(self) -> str | None:
        return None if self.prompt_group_id is None else str(self.prompt_group_id)

    @property
    def page_group(self) -> str | None:
        return None if self.page_group_id is None else str(self.page_group_id)

    @property
    def timing_text(self) -> str | None:
        # The old agent passed str(timing): a dict's Python repr; the doer reads that.
        return None if self.timing is None else str(self.timing)


PROGRAMS: tuple[Program, ...] = (
    _program(
        msg_type="sync_epicprod_inventory",
        input=InventoryIn,
        argv=(
            PY,
            MANAGE,
            "sync_epicprod_inventory",
            option("--pandaid", "by_pandaid"),
            option("--jeditaskid", "by_jeditaskid"),
            option("--prod-task", "by_task"),
        ),
        env=(*DJANGO_ENV, "X509_USER_PROXY", "EPICPROD_STUDY_FETCH_TIMEOUT"),
        time_limit=180,
        time_limit_env="EPICPROD_INVENTORY_TIMEOUT",
        dedup_key="sync_inventory:{subject}",
        events=_same("epicprod_inventory_ready"),
        echo=("pandaid", "jeditaskid", "task_name"),
        fields={"error": ""},
        action="inventory_sync",
        name="sync-epicprod-inventory",
        samples=({"pandaid": "6543210"}, {"task_name": "26.02.0_DIS_NC_18x275"}),
    ),
    _program(
        msg_type="refresh_system_status",
        input=SystemStatusIn,
        argv=(
            PY,
            "scripts/refresh-system-status.py",
            "--source",
            arg("source_or_agent"),
            option("--only", "systems"),
        ),
        time_limit=60,
        time_limit_env="EPICPROD_SYSTEM_STATUS_TIMEOUT",
        dedup_key="refresh_system_status:{systems_key}",
        events=_same("system_status_ready"),
        fields={"error": ""},
        relay="on_failure",
        action="system_status_refresh",
        name="refresh-system-status",
        samples=({}, {"only": ["panda", "rucio"], "source": "web"}),
    ),
    _program(
        msg_type="capture_system_snap",
        input=SnapIn,
        argv=(
            PY,
            "scripts/capture-system-snap.py",
            "--scope",
            arg("scope"),
            "--requested-at",
            arg("requested_at_or_now"),
            flag("--manual", "manual"),
        ),
        time_limit=30,
        time_limit_env="EPICPROD_SNAPPER_CAPTURE_TIMEOUT",
        dedup_key="{snap_key}",
        stdout="json_list",
        result="results",
        events=_same("snapper_capture_ready"),
        echo=("scope", "manual"),
        fields={"error": ""},
        event=_snap_event,
        quiet=quiet_capture,
        relay="on_failure",
        action="snapper_capture",
        name="capture-system-snap",
        samples=({}, {"scope": "testbed"}),
    ),
    _program(
        msg_type="association_sweep",
        input=SweepIn,
        argv=(
            PY,
            MANAGE,
            "sweep_panda_associations",
            option("--days", "days", otherwise="association_sweep_days"),
        ),
        time_limit=600,
        time_limit_env="EPICPROD_ASSOCIATION_SWEEP_TIMEOUT",
        dedup_key="association_sweep",
        events=_done("association_sweep"),
        summary="last_line",
        action="association_sweep",
        sublevel="high",
        live_default=True,
        name="sweep-panda-associations",
        samples=({}, {"days": 30, "created_by": "catalog_sync"}),
    ),
    _program(
        msg_type="questionnaire_import",
        input=_by("questionnaire_import"),
        argv=(
            PY,
            "scripts/import-questionnaires.py",
            "--from-sysconfig",
            "--created-by",
            arg("by"),
        ),
        time_limit=120,
        time_limit_env="EPICPROD_QUESTIONNAIRE_IMPORT_TIMEOUT",
        dedup_key="questionnaire_import",
        stdout="skipped_prefix",
        events=_done("questionnaire_import"),
        summary="last_line",
        action="questionnaire_import",
        sublevel="normal",
        live_default=True,
        name="import-questionnaires",
        samples=({},),
    ),
    _program(
        msg_type="questionnaire_automatch",
        input=AutomatchIn,
        argv=(
            PY,
            "scripts/match-questionnaires.py",
            "--created-by",
            arg("by"),
            flag("--all", "all"),
        ),
        time_limit=1800,
        time_limit_env="EPICPROD_AUTOMATCH_TIMEOUT",
        dedup_key="questionnaire_automatch",
        events=_done("questionnaire_automatch"),
        summary="last_line",
        action="questionnaire_automatch",
        sublevel="normal",
        live_default=True,
        name="match-questionnaires",
        samples=({}, {"all": True}),
    ),
    _program(
        msg_type="questionnaire_match_update",
        input=_by("questionnaire_match"),
        argv=(PY, "scripts/update-questionnaire-matches.py", "--updated-by", arg("by")),
        time_limit=300,
        time_limit_env="EPICPROD_QUESTIONNAIRE_MATCH_TIMEOUT",
        dedup_key="questionnaire_match_update",
        events=_same("questionnaire_match_ready"),
        summary="all",
        action="questionnaire_match",
        name="update-questionnaire-matches",
        samples=({},),
    ),
    _program(
        msg_type="catalog_import",
        input=CatalogImportIn,
        argv=(PY, "scripts/pcs-catalog-import.py", arg("source")),
        time_limit=1800,
        time_limit_env="EPICPROD_CATALOG_IMPORT_TIMEOUT",
        dedup_key="catalog_import:{source}",
        events=_same("catalog_import_ready"),
        echo=("source",),
        summary="last_line",
        action="catalog_import",
        sublevel="high",
        live_default=True,
        name="pcs-catalog-import",
        samples=({"source": "csv"}, {"source": "epic-prod"}),
    ),
    _program(
        msg_type="campaign_progress_refresh",
        input=_by("progress_refresh"),
        argv=(PY, "scripts/refresh-campaign-progress.py", "--generated-by", arg("by")),
        time_limit=300,
        time_limit_env="EPICPROD_CAMPAIGN_PROGRESS_TIMEOUT",
        dedup_key="campaign_progress_refresh",
        # A request within the cooldown ends `skipped` with its event (the old agent
        # dropped it silently and the page waited for its own timeout: fixed).
        cooldown=300,
        cooldown_env="EPICPROD_CAMPAIGN_PROGRESS_MIN_INTERVAL",
        events=_same("campaign_progress_ready"),
        summary="all",
        action="progress_refresh",
        name="refresh-campaign-progress",
        samples=({},),
    ),
    _program(
        msg_type="evgen_rucio_update",
        input=ByIn,
        argv=(PY, "scripts/import_evgen_rucio.py", "--apply"),
        time_limit=900,
        time_limit_env="EPICPROD_EVGEN_RUCIO_TIMEOUT",
        dedup_key="evgen_rucio_update",
        events=_same("evgen_rucio_ready"),
        action="evgen_sweep",
        sublevel="high",
        live_default=True,
        name="import-evgen-rucio",
        samples=({},),
    ),
    _program(
        msg_type="rucio_arrivals_sweep",
        input=_by("prodops_agent"),
        argv=(PY, "scripts/rucio-arrivals-sweep.py", "--created-by", arg("by")),
        time_limit=300,
        time_limit_env="EPICPROD_RUCIO_ARRIVALS_TIMEOUT",
        dedup_key="rucio_arrivals_sweep",
        events=_done("rucio_arrivals_sweep"),
        summary="first_line",
        action="rucio_arrivals_sweep",
        sublevel="low",
        live_default=False,
        name="rucio-arrivals-sweep",
        samples=({},),
    ),
    _program(
        msg_type="epic_prod_past_import",
        input=_by("epic_prod_past_import"),
        argv=(PY, "scripts/epic-prod-past-import.py", "--created-by", arg("by")),
        time_limit=600,
        time_limit_env="EPICPROD_PAST_IMPORT_TIMEOUT",
        dedup_key="epic_prod_past_import",
        events=_done("epic_prod_past_import"),
        summary="last_line",
        action="past_import",
        sublevel="high",
        live_default=True,
        name="epic-prod-past-import",
        samples=({},),
    ),
    _program(
        msg_type="file_events_measure",
        input=ByIn,
        argv=(PY, "scripts/measure-file-events.py"),
        time_limit=3600,
        time_limit_env="EPICPROD_FILE_EVENTS_TIMEOUT",
        dedup_key="file_events_measure",
        events=_done("file_events_measure"),
        summary="last_line",
        action="file_events_measure",
        name="measure-file-events",
        samples=({},),
    ),
    _program(
        msg_type="delivery_daily_rebuild",
        input=_by("delivery_daily_rebuild"),
        argv=(PY, "scripts/delivery-daily-rebuild.py", "--created-by", arg("by")),
        time_limit=3600,
        time_limit_env="EPICPROD_DELIVERY_DAILY_TIMEOUT",
        dedup_key="delivery_daily_rebuild",
        stdout="summary_line",
        result="summary",
        events=_done("delivery_daily_rebuild"),
        notice=delivery.notice,
        action="delivery_daily_rebuild",
        name="delivery-daily-rebuild",
        samples=({},),
    ),
    _program(
        msg_type="assessment_completed",
        input=AssessmentIn,
        argv=(
            PY,
            "-m",
            "swf_epicprod.assessment.enforce",
            "--job-id",
            arg("job_id_text"),
            option("--prompt-group-id", "prompt_group"),
            option("--page-group-id", "page_group"),
            option("--status", "status"),
            option("--timing", "timing_text"),
        ),
        time_limit=300,
        time_limit_env="EPICPROD_ASSESSMENT_ENFORCE_TIMEOUT",
        dedup_key="assessment_enforce:{job_id}",
        events=_done("assessment_completed"),
        action="assessment_enforce",
        # The old agent recorded it only when the enforcement failed or timed out.
        record="failed",
        name="assessment-enforce",
        samples=({"job_id": "42", "status": "completed", "timing": {"elapsed_s": 12.5}},),
    ),
)


def capabilities() -> list[Capability]:
    """The compiled capabilities, in declaration order."""
    return [p.capability() for p in PROGRAMS]


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    for cap in capabilities():
        register(cap)
