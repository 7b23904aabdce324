"""Completion notifications: a message to Mattermost (or any JSON webhook) when a job
whose msg_type and outcome a ``[[notify]]`` rule names ends.

The job path pays one small write: :meth:`Notifications.job_ended` renders the message
and keeps it in the :class:`~opsagent.reporting.outbox.Outbox` (a local SQLite commit,
no network), then wakes the sender thread.  Everything that talks to a webhook runs on
that thread, with a short timeout per post: a slow, hung or dead webhook never delays or
fails a job, and never touches the receiver.

Per rule: at most ``rate_limit`` messages per ``rate_window_seconds`` (fixed windows);
the jobs beyond it are kept as ``suppressed`` and told in one digest message when the
window ends.  A post that fails is tried again with back-off (1 s, doubling, at most
``max_backoff_seconds``; a ``429``'s ``Retry-After`` as asked), and meanwhile nothing
else of that rule is posted: a webhook that is down is asked once per back-off, not
once per message.  ``400`` and ``413`` (the webhook refuses this payload) settle the
message as ``failed``; a ``401``/``403``/``404`` (a hook disabled, deleted or its
channel locked) is retried like a failure, in case an administrator enables it again.
A message not posted within ``expire_seconds`` is given up.  Each change between
working and failing is logged once per rule, never with the URL or a response body.

The webhook's URL is a credential: read from the credential store when the host
starts, learned by redaction (whole, its path, its key), and never logged.  Every
message is scrubbed when it is made and again before it is posted.
"""

from __future__ import annotations

import fnmatch
import json
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
from loguru import logger

from opsagent.host.config import NotifyRule
from opsagent.outcome import SUCCESSES
from opsagent.reporting import health
from opsagent.reporting.outbox import Message, Outbox
from opsagent.reporting.template import cut, markdown_text, no_mentions, render

#: Pending messages posted per pass of the sender (then digests and stop are looked at).
BATCH = 50
#: Attachment colours and icons by outcome (Mattermost); any other outcome is a failure.
COLOURS = {
    "ok": "#2e7d32",
    "skipped": "#1565c0",
    "warning": "#f9a825",
    "unrecorded": "#ef6c00",
    "unverified": "#ef6c00",
}
FAILURE_COLOUR = "#c62828"
ICONS = {
    "ok": ":white_check_mark:",
    "skipped": ":fast_forward:",
    "warning": ":warning:",
    # The work happened; its bookkeeping or its check did not.
    "unrecorded": ":warning:",
    "unverified": ":warning:",
}
FAILURE_ICON = ":x:"
#: A Mattermost error id (``web.incoming_webhook.text.app_error``) is safe to log; the
#: rest of an error body is not (it may echo what was sent).
_ERROR_ID = re.compile(r"[a-z0-9_.]{1,100}")
#: Seconds between two prunings of the outbox's settled messages (and at each start).
PRUNE_EVERY = 3600.0
#: Statuses that refuse this message for good.
PERMANENT = (400, 413, 422)


def matches(rule: NotifyRule, msg_type: str, outcome: str) -> bool:
    return any(fnmatch.fnmatchcase(msg_type, g) for g in rule.msg_types) and any(
        fnmatch.fnmatchcase(outcome, g) for g in rule.outcomes
    )


def url_secrets(url: str) -> list[str]:
    """What of a webhook URL redaction must know: the whole, its path, its last segment
    (a Mattermost hook's key), so that none of them shows in a log line."""
    path = urlsplit(url).path
    return [url, path, path.rstrip("/").rsplit("/", 1)[-1]]


def shown(url: str) -> str:
    """Where a webhook is, for logs: its host only."""
    return urlsplit(url).hostname or "?"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


@attrs.frozen
class Posted:
    """What one post came to."""

    status: int | None  # None: no answer (a timeout, a refused connection)
    problem: str | None  # None: accepted
    retry_after: float | None = None
    error_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def post(session: Any, url: str, body: str, key: str, timeout: float) -> Posted:
    """One post of ``body`` (JSON text) to ``url``; never raises."""
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    try:
        response = session.post(
            url, data=body.encode(), headers=headers, timeout=(timeout, timeout)
        )
    except Exception as exc:  # noqa: BLE001 - the webhook's problem, tried again later
        return Posted(None, type(exc).__name__)
    try:
        if 200 <= response.status_code < 300:
            return Posted(response.status_code, None)
        error_id = None
        try:
            doc = response.json()
            if isinstance(doc, dict) and _ERROR_ID.fullmatch(str(doc.get("id", ""))):
                error_id = str(doc["id"])
        except ValueError:
            pass
        return Posted(
            response.status_code,
            f"HTTP {response.status_code}" + (f" {error_id}" if error_id else ""),
            retry_after(response.headers.get("Retry-After")),
            error_id,
        )
    finally:
        response.close()


class Notifications:
    """The observer: renders, keeps and posts the messages of ``rules``."""

    def __init__(
        self,
        rules: list[NotifyRule],
        *,
        outbox: Path,
        urls: Mapping[str, str],
        problems: Mapping[str, str] | None = None,
        instance: str,
        namespace: str,
        scrub: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.rules = {r.name: r for r in rules}
        self.outbox_path = outbox
        self.urls = dict(urls)
        self.problems = dict(problems or {})
        self.instance = instance
        self.namespace = namespace
        self.scrub = scrub
        self.outbox: Outbox | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._window_lock = threading.Lock()
        #: rule -> (start of its current window, messages let through in it).
        self._windows: dict[str, tuple[float, int]] = {}
        self._failing: dict[str, bool] = {}
        self._backoff: dict[str, int] = {}
        self._next_prune = time.time() + PRUNE_EVERY
        #: rule -> until when nothing of it is posted (its webhook is failing).
        self._held: dict[str, float] = {}
        self.sent = 0
        self.failed_posts = 0
        #: Jobs whose message could not be written to the outbox (a full disk).
        self.lost = 0
        self._losing = False

    # -- the observer --------------------------------------------------------------

    def start(self) -> None:
        from opsagent.host.observers import ObserverError

        if self.problems:
            raise ObserverError(
                "; ".join(f"[[notify]] {n}: {p}" for n, p in sorted(self.problems.items()))
            )
        try:
            self.outbox = Outbox(self.outbox_path)
        except (sqlite3.Error, OSError) as exc:
            raise ObserverError(
                f"[[notify]]: cannot open the outbox {self.outbox_path}: {exc}"
            ) from exc
        # What waits is tried at once: a restart is a good moment (back-off starts again).
        waiting = self.outbox.due_now()
        if waiting:
            logger.info("notifications: {} message(s) left by the last run will be posted", waiting)
        self._thread = threading.Thread(target=self._run, name="notifications", daemon=True)
        self._thread.start()

    def job_ended(self, end: health.JobEnd) -> None:
        """Keep the message of each rule that matches; a local write, no network."""
        if self.outbox is None:
            return
        clean: health.JobEnd | None = None
        for rule in self.rules.values():
            if not matches(rule, end.msg_type, end.status):
                continue
            try:
                clean = clean or self.scrubbed(end)
                self._keep(rule, clean)
            except Exception:  # noqa: BLE001 - a notification never fails a job
                self.lost += 1
                if not self._losing:
                    self._losing = True
                    logger.opt(exception=True).error(
                        "notifications: the message of job {} for rule {} could not be kept "
                        "(nor will others be, until the outbox {} can be written)",
                        end.job_id,
                        rule.name,
                        self.outbox_path,
                    )
                continue
            if self._losing:
                self._losing = False
                logger.info("notifications: the outbox can be written again")
        self._wake.set()

    def stop(self) -> None:
        """End the sender within a post's timeout; what waits stays in the outbox."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            # A post in progress: its connect and its read timeout.
            longest = max((r.timeout_seconds for r in self.rules.values()), default=1.0)
            self._thread.join(2 * longest + 1)
            if self._thread.is_alive():
                # Still posting: the outbox stays open under it; the host exits anyway.
                logger.warning("notifications: a post outlived the stop; left to the exit")
                return
            self._thread = None
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None

    # -- making messages -------------------------------------------------------------

    def fields(self, end: health.JobEnd, *, markdown: bool) -> dict[str, str]:
        """The values a template may use, each already safe for the message's format."""
        esc = markdown_text if markdown else (lambda text: text)
        out: dict[str, str] = {}
        for source in (end.data, end.echo):
            for key, value in source.items():
                text = _scalar(value)
                if text is not None and re.fullmatch(r"[a-z_][a-z0-9_]{0,63}", key):
                    out[key] = esc(cut(text))
        ids = " ".join(f"{k}={v}" for k, v in end.echo.items())
        success = end.status in SUCCESSES
        out.update(
            job_id=esc(end.job_id),
            msg_type=esc(end.msg_type),
            event=esc(end.event or end.msg_type),
            outcome=esc(end.status),
            ok="true" if success else "false",
            reason=esc(cut(end.reason or "")),
            reason_line=(": " + esc(cut(end.reason))) if end.reason else "",
            duration=f"{end.duration:.3f}",
            instance=esc(self.instance),
            namespace=esc(self.namespace),
            ids=esc(cut(", " + ids)) if ids else "",
            icon=ICONS.get(end.status, FAILURE_ICON) if markdown else "",
            ended_at=_iso(time.time()),
        )
        return out

    def message(self, rule: NotifyRule, end: health.JobEnd, key: str) -> dict[str, Any]:
        """The JSON body of one job's message for ``rule``."""
        markdown = rule.kind == "mattermost"
        text = render(rule.template, self.fields(end, markdown=markdown)).strip()
        if rule.kind == "mattermost":
            esc = markdown_text
            facts = [
                {"title": "outcome", "value": esc(end.status), "short": True},
                {"title": "duration", "value": f"{end.duration:.3f} s", "short": True},
                {"title": "job", "value": esc(end.job_id), "short": True},
                *(
                    {"title": esc(k), "value": esc(cut(str(v), 200)), "short": True}
                    for k, v in end.echo.items()
                ),
            ]
            attachment = {
                "fallback": no_mentions(
                    cut(f"{end.msg_type} {end.status} (job {end.job_id})", 300)
                ),
                "color": COLOURS.get(end.status, FAILURE_COLOUR),
                "fields": facts,
            }
            return self._mattermost(rule, text, key, [attachment])
        return {
            "id": key,
            "rule": rule.name,
            "type": "job",
            "text": text,
            "event": {
                "job_id": end.job_id,
                "msg_type": end.msg_type,
                "event": end.event or end.msg_type,
                "outcome": end.status,
                "ok": end.status in SUCCESSES,
                "reason": end.reason,
                "duration_s": round(end.duration, 3),
                "echo": dict(end.echo),
                "data": dict(end.data),
                "instance": self.instance,
                "namespace": self.namespace,
            },
        }

    def _mattermost(
        self, rule: NotifyRule, text: str, key: str, attachments: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text}
        for name in ("username", "channel", "icon_url"):
            value = getattr(rule, name)
            if value:
                body[name] = value
        if attachments:
            body["attachments"] = attachments
        body["props"] = {"opsagent_id": key}
        return body

    def _tree(self, value: Any) -> Any:
        """``value`` with every string in it scrubbed (before it is JSON: a secret is
        matched as it is, not as JSON escapes it)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self._tree(str(k)): self._tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._tree(v) for v in value]
        return value

    def _dump(self, body: dict[str, Any]) -> str:
        return json.dumps(self._tree(body), ensure_ascii=False, default=str)

    def _rescrub(self, text: str) -> str:
        """A kept body scrubbed again before it is posted (secrets learned since)."""
        try:
            return self._dump(json.loads(text))
        except ValueError:
            return self.scrub(text)

    def scrubbed(self, end: health.JobEnd) -> health.JobEnd:
        """``end`` with every string scrubbed, before any of it is escaped or encoded
        (an escaped secret no longer matches)."""
        return attrs.evolve(
            end,
            job_id=self.scrub(end.job_id),
            reason=self.scrub(end.reason) if end.reason else end.reason,
            echo=self._tree(dict(end.echo)),
            data=self._tree(dict(end.data)),
        )

    def _keep(self, rule: NotifyRule, end: health.JobEnd) -> None:
        """Keep ``rule``'s message of ``end`` (scrubbed), or count it for a digest."""
        assert self.outbox is not None
        key = f"{rule.name}/{end.job_id}"
        now = time.time()
        window = now - now % rule.rate_window_seconds
        with self._window_lock:
            start, n = self._windows.get(rule.name, (None, 0))
            if start != window:
                # A window's count survives a restart: what was let through is on disk.
                n = self.outbox.told_since(rule.name, window)
            over = n >= rule.rate_limit
            state = "suppressed" if over else "pending"
            added = self.outbox.add(
                key,
                rule.name,
                "" if over else self._dump(self.message(rule, end, key)),
                summary=f"{end.msg_type} {end.status}",
                state=state,
                created=now,
            )
            self._windows[rule.name] = (window, n + (1 if added and not over else 0))

    def digest_message(
        self, rule: NotifyRule, jobs: list[tuple[str, str]], first: float, last: float
    ) -> tuple[str, str]:
        """``(key, body)`` of the digest of ``jobs`` (summary, key) over the rate limit."""
        counts: dict[str, int] = {}
        for summary, _ in jobs:
            counts[summary] = counts.get(summary, 0) + 1
        key = f"{rule.name}/digest/{first:.6f}"
        job_ids = [k.split("/", 1)[1] for _, k in jobs]
        markdown = rule.kind == "mattermost"
        esc = markdown_text if markdown else (lambda text: text)
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        told = ", ".join(f"{esc(s)} ×{n}" for s, n in ranked)
        text = (
            f"{len(jobs)} more jobs ended on {esc(self.instance)} between {_iso(first)} and "
            f"{_iso(last)} than rule {esc(rule.name)} tells one by one ({rule.rate_limit} per "
            f"{rule.rate_window_seconds:g} s): {told}"
        )
        if markdown:
            shown_ids = ", ".join(esc(cut(j, 100)) for j in job_ids[:10])
            more = f" and {len(job_ids) - 10} more" if len(job_ids) > 10 else ""
            body = self._mattermost(
                rule, f":information_source: {text}\njobs: {shown_ids}{more}", key, None
            )
        else:
            body = {
                "id": key,
                "rule": rule.name,
                "type": "digest",
                "text": text,
                "count": len(jobs),
                "counts": counts,
                "job_ids": job_ids[:1000],
                "first": _iso(first),
                "last": _iso(last),
            }
        return key, self._dump(body)

    def test_message(self, rule: NotifyRule) -> tuple[str, str]:
        """``(key, body)`` of a test message (``opsagent selftest --live --notify-test``)."""
        now = time.time()
        key = f"{rule.name}/test/{now:.6f}"
        instance = markdown_text(self.instance) if rule.kind == "mattermost" else self.instance
        text = (
            f"opsagent selftest: a test notification of rule {rule.name} from "
            f"{instance} at {_iso(now)}"
        )
        if rule.kind == "mattermost":
            body = self._mattermost(rule, f":wave: {text}", key, None)
        else:
            body = {"id": key, "rule": rule.name, "type": "test", "text": text}
        return key, self._dump(body)

    # -- the sender thread -------------------------------------------------------------

    def _run(self) -> None:
        import requests

        session = requests.Session()
        try:
            while not self._stopping.is_set():
                try:
                    wait = self._pass(session)
                except Exception:  # noqa: BLE001 - the sender outlives a failing pass
                    logger.opt(exception=True).error("notifications: a pass failed; carrying on")
                    wait = 5.0
                self._wake.wait(wait)
                self._wake.clear()
        finally:
            session.close()

    def _pass(self, session: Any) -> float:
        """Digest what is due, post what is due; the seconds until the next thing to do."""
        assert self.outbox is not None
        now = time.time()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            self.outbox.prune()
        wait = 5.0
        for name, oldest in self.outbox.suppressed().items():
            rule = self.rules.get(name)
            if rule is None:
                self.outbox.expire_suppressed(name, "its rule is no longer configured")
                continue
            window = now - now % rule.rate_window_seconds
            if oldest < window:
                self.outbox.digest(
                    name,
                    window,
                    lambda jobs, a, b, rule=rule: self.digest_message(rule, jobs, a, b),
                )
            else:
                wait = min(wait, window + rule.rate_window_seconds - now + 0.01)
        # A held rule's messages are left in the outbox: they must not crowd out the
        # other rules' from a batch.
        held = {rule for rule, until in self._held.items() if until > now}
        batch = self.outbox.due(now, BATCH, held)
        for message in batch:
            if self._stopping.is_set():
                return 0.0
            if message.rule in held:
                continue  # held while this pass went on
            if not self._deliver(session, message):
                held.add(message.rule)
        if len(batch) == BATCH:
            return 0.0  # more may be due
        upcoming = self.outbox.next_due()
        if upcoming is not None:
            now = time.time()
            if upcoming <= now:
                # Due, but of a held rule: until a hold ends.
                ends = [t for t in self._held.values() if t > now]
                upcoming = min(ends) if ends else now
            wait = min(wait, max(0.01, upcoming - now))
        return wait

    def _deliver(self, session: Any, message: Message) -> bool:
        """Post one message; False when its rule's webhook is failing (hold the rest)."""
        assert self.outbox is not None
        rule = self.rules.get(message.rule)
        if rule is None:
            self.outbox.settle(message.id, "expired", "its rule is no longer configured")
            return True
        now = time.time()
        if now - message.created > rule.expire_seconds:
            self.outbox.settle(message.id, "expired", "not posted in time")
            logger.warning(
                "notifications: rule {}: message {} given up: not posted within {:g} s",
                rule.name,
                message.key,
                rule.expire_seconds,
            )
            return True
        url = self.urls[rule.name]
        result = post(session, url, self._rescrub(message.body), message.key, rule.timeout_seconds)
        if result.ok:
            self.outbox.sent(message.id)
            self.sent += 1
            self._backoff[rule.name] = 0
            if self._failing.get(rule.name):
                logger.info("notifications: rule {}: {} works again", rule.name, shown(url))
            self._failing[rule.name] = False
            return True
        self.failed_posts += 1
        problem = result.problem or "?"
        if result.status in PERMANENT:
            self.outbox.settle(message.id, "failed", problem)
            logger.error(
                "notifications: rule {}: {} refused message {} ({}); dropped -- check the "
                "rule's template and fields",
                rule.name,
                shown(url),
                message.key,
                problem,
            )
            return True
        tries = self._backoff.get(rule.name, 0) + 1
        self._backoff[rule.name] = tries
        delay = min(rule.max_backoff_seconds, 2.0 ** (tries - 1)) * random.uniform(0.9, 1.1)  # noqa: S311
        if result.status in (401, 403, 404, 410):
            delay = rule.max_backoff_seconds
        if result.retry_after is not None:
            delay = min(result.retry_after, rule.expire_seconds)
        until = time.time() + delay
        self.outbox.retry(message.id, until, problem)
        self.outbox.hold_rule(rule.name, until)
        self._held[rule.name] = until
        if not self._failing.get(rule.name):
            why = {
                403: " (the hook is disabled, or its channel locked)",
                404: " (no such hook)",
                429: " (rate limited)",
            }.get(result.status or 0, "")
            logger.warning(
                "notifications: rule {}: posting to {} failed ({}{}); messages are kept and "
                "tried again, at most every {:g} s, for up to {:g} s",
                rule.name,
                shown(url),
                problem,
                why,
                rule.max_backoff_seconds,
                rule.expire_seconds,
            )
        self._failing[rule.name] = True
        return False

    # -- selftest ------------------------------------------------------------------

    def post_test(self, name: str) -> Posted:
        """Post a test message of rule ``name`` now, from the calling thread."""
        import requests

        rule = self.rules[name]
        key, body = self.test_message(rule)
        with requests.Session() as session:
            return post(session, self.urls[name], body, key, rule.timeout_seconds)
