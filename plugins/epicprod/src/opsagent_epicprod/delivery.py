"""``delivery_daily_rebuild``'s Capcom notice (LEGACY.md, handler 10 and "Side channels").

After the nightly rebuild the old agent left one notice in the monitor's notice store,
source ``swf-campaign-delivery``: on success the newest recorded day's arrivals, linking
to the campaign view (``delivery-daily:<day>``); on any failure a warning linking to the
logs (``delivery-daily-fail:<today, US Eastern>``).  The monitor's own poll-mode notice
words them the same way, so a reader sees one kind of line whoever made it.

The day and the per-campaign arrivals come from the doer's ``SUMMARY {json}`` line:
``day`` (or ``through``), an ISO date, else yesterday in US Eastern time (the rebuild
writes every complete Eastern day through yesterday); ``campaigns``, a mapping of
campaign name to ``{"arrived_files", "arrived_events"}`` (or ``files``/``events``,
directly or under ``totals``).  A summary without them still gives a notice, without
the counts.  Everything from the summary is the doer's output, so it is read
defensively: a field that is not what it should be is left out, never an error.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from opsagent import Notice, Outcome

SOURCE = "swf-campaign-delivery"
ET = ZoneInfo("America/New_York")
#: Campaigns named in one title at most (the rest are counted).
MAX_PARTS = 8


def _count(block: Any, *names: str) -> int:
    if not isinstance(block, dict):
        return 0
    for source in (block, block.get("totals")):
        if not isinstance(source, dict):
            continue
        for name in names:
            value = source.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return 0


def _day(summary: dict[str, Any], now: datetime) -> date:
    for key in ("day", "through"):
        value = summary.get(key)
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                continue
    return now.astimezone(ET).date() - timedelta(days=1)


def _parts(summary: dict[str, Any]) -> list[str] | None:
    campaigns = summary.get("campaigns")
    if not isinstance(campaigns, dict):
        return None
    parts = []
    for name, block in sorted(campaigns.items()):
        files = _count(block, "arrived_files", "files")
        if not files:
            continue
        part = f"{str(name)[:60]}: {files:,} files"
        events = _count(block, "arrived_events", "events")
        if events >= 1_000_000:
            part += f" ({events / 1e6:.1f}M events)"
        elif events:
            part += f" ({events:,} events)"
        parts.append(part)
    if len(parts) > MAX_PARTS:
        parts = [*parts[:MAX_PARTS], f"{len(parts) - MAX_PARTS} more"]
    return parts


def notice(_inp: Any, outcome: Outcome, now: datetime | None = None) -> Notice:
    """The notice of one rebuild's end (``Program.notice``)."""
    now = now or datetime.now(ET)
    if not outcome.succeeded:
        today = now.astimezone(ET).date()
        return Notice(
            source=SOURCE,
            severity="warning",
            title=f"Campaign delivery nightly rebuild failed ({outcome.reason or outcome.status})",
            url="/logs/",
            dedup_key=f"delivery-daily-fail:{today.isoformat()}",
        )
    summary = outcome.data.get("summary")
    summary = summary if isinstance(summary, dict) else {}
    day = _day(summary, now)
    title = f"Campaign delivery updated through {day:%b} {day.day} ET"
    parts = _parts(summary)
    if parts is not None:
        title += " · " + (" · ".join(parts) if parts else "no new files")
    return Notice(
        source=SOURCE,
        severity="info",
        title=title,
        url="/snapper/epicprod/campaign/",
        dedup_key=f"delivery-daily:{day.isoformat()}",
    )
