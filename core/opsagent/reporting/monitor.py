"""The existing monitor keeps showing the host: REST heartbeats and action-log records.

Formats are those of docs/wire.md ("The monitor").  Everything is posted from one background
thread: callers only put a record on a bounded queue (dropped and counted when full),
and each post has a short connect and read timeout.  A slow, hung or dead monitor
therefore costs the message path nothing; at worst records are dropped.  Failures are
logged once per change (never with a response body, which may echo the token).
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from loguru import logger

from opsagent.host.config import MonitorConfig
from opsagent.reporting import health

LEVELS = {
    "ok": (20, "INFO"),
    "skipped": (20, "INFO"),
    "unrecorded": (30, "WARNING"),
    "warning": (30, "WARNING"),
    "unverified": (30, "WARNING"),
}
ERROR_LEVEL = (40, "ERROR")
LEVEL_NUMBERS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
#: The most of a reason an action record carries, as the old agent cut it.
REASON_MAX = 300

_STOP = object()


def _shown(url: str) -> str:
    """``url`` without user information, for log lines."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Monitor:
    """Posts heartbeats every ``heartbeat_seconds`` and one log record per ended job."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        instance: str,
        namespace: str,
        token: str | None,
        snapshot: Callable[[], health.Snapshot],
        scrub: Callable[[str], str] = lambda text: text,
        destination: str = "",
    ) -> None:
        self.config = config
        self.instance = instance
        self.namespace = namespace
        #: The queue the host consumes, for the subscriber record.
        self.destination = destination
        self.snapshot = snapshot
        self.scrub = scrub
        base = config.url or config.http_url
        self.base = base
        self.heartbeat_url = f"{base}/api/systemagents/heartbeat/"
        self.log_url = f"{config.http_url or config.url}/api/logs/"
        self.notice_url = f"{config.http_url or config.url}/api/capcom/notices/ingest/"
        self.public_url = config.public_url or config.http_url or config.url
        self.headers = {"Authorization": f"Token {token}"} if token else {}
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_limit)
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._failing: dict[str, bool] = {}
        self._thread: threading.Thread | None = None
        #: Set by stop(): records waiting are posted until this moment, then dropped.
        self._flush_until: float | None = None
        self.hostname = socket.gethostname()
        self.pid = os.getpid()

    # -- what callers do (never blocks) -------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()

    def job_ended(self, end: health.JobEnd) -> None:
        """Queue the action-log record of one job, then its Capcom notices; each dropped
        when the queue is full.  An end its capability records only when it fails
        (``Capability.record``) posts no record when it succeeded."""
        if end.recorded:
            self._put(("log", self.action_record(end)))
        for notice in end.notices:
            self._put(("notice", self.notice_body(notice)))

    def stop(self) -> None:
        """Post the records still waiting (for at most ``timeout_seconds``: a
        deliberate ``shutdown``'s own record is among them), send the EXITED heartbeat
        (bounded in time) and end the thread."""
        if self._thread is None:
            return
        self._flush_until = time.monotonic() + self.config.timeout_seconds
        while True:
            try:
                self.queue.put_nowait(_STOP)
                break
            except queue.Full:
                try:  # make room: the oldest record goes
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass
        # At most the post in progress and the EXITED heartbeat, when the monitor does
        # not answer (then what waits is dropped).
        self._thread.join(2 * self.config.timeout_seconds + 1)
        self._thread = None

    def _put(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    # -- the bodies (docs/wire.md) --------------------------------------------------

    def heartbeat(self, *, exiting: bool = False) -> dict[str, Any]:
        snap = self.snapshot()
        if exiting:
            status, state = "EXITED", health.EXITED
        else:
            status = "OK" if snap.healthy else "WARNING"
            # The monitor knows STARTING, READY, PROCESSING and EXITED.
            state = snap.state
            if state == health.STOPPING:
                state = health.PROCESSING if snap.jobs else health.READY
        return {
            "instance_name": self.instance,
            "agent_type": self.config.agent_type,
            "status": status,
            "description": self.scrub(snap.line()),
            "mq_connected": snap.broker_connected and not exiting,
            "pid": self.pid,
            "hostname": self.hostname,
            "operational_state": state,
            "namespace": self.namespace,
        }

    def action_record(self, end: health.JobEnd) -> dict[str, Any]:
        """The old agent's ``_log_action`` record of one job (docs/wire.md): ``extra_data``
        with ``action``, ``outcome``, ``sublevel``, ``live_default``, then when set
        ``subject_type``, ``subject_key``, ``username``, ``duration_ms``, ``reason`` (at most
        :data:`REASON_MAX` characters) and the job's counts; then this host's additions
        (``msg_type``, ``job_id``, ``agent``, the request's identifying fields), which
        never overwrite those."""
        action = end.action or end.msg_type
        level, levelname = LEVELS.get(end.status, ERROR_LEVEL)
        if end.levelname:
            level, levelname = LEVEL_NUMBERS.get(end.levelname, level), end.levelname
        reason = self.scrub(end.reason)[:REASON_MAX] if end.reason else ""
        subject_key = self.scrub(end.subject_key)
        # As the old agent wrote it: the subject only when it has a key, no empty words.
        subject = f"{end.subject_type}:{subject_key}" if subject_key else ""
        message = " ".join(x for x in (action, subject, end.status) if x)
        if reason:
            message += f" — {reason}"
        extra: dict[str, Any] = {
            "action": action,
            "outcome": end.status,
            "sublevel": end.sublevel,
            "live_default": end.live_default,
        }
        # Each only when set, as the old agent sent them.
        for key, value in (
            ("subject_type", end.subject_type),
            ("subject_key", subject_key),
            ("username", self.scrub(end.username)),
        ):
            if value:
                extra[key] = value
        if end.timed:
            extra["duration_ms"] = int(end.duration * 1000)
        if reason:
            extra["reason"] = reason
        # Counts, then what this host adds: the reserved keys above are never overwritten.
        added = {
            **end.counts,
            "msg_type": end.msg_type,
            "job_id": end.job_id,
            "agent": self.instance,
            **end.echo,
        }
        for k, v in added.items():
            if k not in extra:
                # Echoed from the request or the doer: scrubbed like the reason.
                extra[k] = self.scrub(v) if isinstance(v, str) else v
        return {
            "app_name": self.config.log_app_name,
            "instance_name": self.config.log_instance_name,
            "timestamp": _now(),
            "level": level,
            "levelname": levelname,
            "message": self.scrub(message),
            "module": self.config.log_module,
            "funcname": action,
            "lineno": 0,
            "process": self.pid,
            "thread": threading.get_ident(),
            "extra_data": extra,
        }

    def notice_body(self, notice: Any) -> dict[str, Any]:
        """The body of one Capcom notice (``opsagent.Notice``): a ``url`` that is a path
        is on the monitor's public address; ``detail`` only when there is one."""
        body = notice.to_json()
        if body["url"].startswith("/"):
            body["url"] = self.public_url + body["url"]
        if not body["detail"]:
            del body["detail"]
        return body

    # -- the thread -----------------------------------------------------------------

    # -- registration, as the old agent's BaseAgent made it at start ---------------------

    def register(self, session: Any) -> None:
        """Before the first heartbeat: the numbered name (``numbered_instance``) and the
        subscriber record of the queue (``register_subscriber``), each best effort."""
        if self.config.numbered_instance:
            number = self._next_agent_id(session)
            if number is not None:
                user = _user()
                self.instance = f"{self.config.agent_type.lower()}-agent-{user}-{number}"
                logger.info("monitor: this host is {} in the monitor", self.instance)
        if self.config.register_subscriber and self.destination:
            queue_ = self.destination
            body = {
                "subscriber_name": f"{self.instance}-{queue_}",
                "description": f"{self.config.agent_type} agent subscribing to {queue_}",
                "is_active": True,
                "fraction": 1.0,
            }
            self._post(session, "subscriber", f"{self.base}/api/subscribers/", body, ok=(400,))

    def _next_agent_id(self, session: Any) -> str | None:
        t = self.config.timeout_seconds
        url = f"{self.base}/api/state/next-agent-id/"
        try:
            response = session.post(url, headers=self.headers, timeout=(t, t))
            body = response.json() if response.status_code < 300 else {}
            response.close()
        except Exception as exc:  # noqa: BLE001 - best effort: keep the configured name
            body = {"error": type(exc).__name__}
        number = body.get("agent_id") if body.get("status") == "success" else None
        if number is None or not str(number).isdigit():
            logger.warning(
                "monitor: no agent id from {} ({}); reporting as {}",
                _shown(url),
                body.get("error", "unexpected answer"),
                self.instance,
            )
            return None
        return str(number)

    def _run(self) -> None:
        import requests

        session = requests.Session()
        self.register(session)
        every = self.config.heartbeat_seconds
        next_beat = time.monotonic()
        while True:
            wait = max(0.0, next_beat - time.monotonic())
            try:
                item = self.queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._post(session, "heartbeat", self.heartbeat_url, self.heartbeat(exiting=True))
                session.close()
                return
            if item is not None:
                if self._flush_until is not None and (
                    time.monotonic() > self._flush_until
                    or self._failing.get("action log")
                    or self._failing.get("heartbeat")
                ):
                    # Stopping, and out of time or the monitor is not answering.
                    self.dropped += 1
                elif item[0] == "notice":
                    # One attempt, never resent (the old agent's rule).
                    self._post(session, "Capcom notice", self.notice_url, item[1])
                else:
                    self._post(session, "action log", self.log_url, item[1])
            if time.monotonic() >= next_beat:
                self._post(session, "heartbeat", self.heartbeat_url, self._safe_heartbeat())
                next_beat = time.monotonic() + every

    def _safe_heartbeat(self) -> dict[str, Any] | None:
        try:
            return self.heartbeat()
        except Exception:  # noqa: BLE001 - a heartbeat is never worth the thread
            logger.opt(exception=True).warning("monitor: could not build a heartbeat")
            return None

    def _post(
        self,
        session: Any,
        what: str,
        url: str,
        body: dict[str, Any] | None,
        ok: tuple[int, ...] = (),
    ) -> None:
        if body is None:
            return
        t = self.config.timeout_seconds
        problem = None
        try:
            response = session.post(url, json=body, headers=self.headers, timeout=(t, t))
            # ``ok``: answers that are not an error here (400: the subscriber exists).
            if response.status_code >= 300 and response.status_code not in ok:
                problem = f"HTTP {response.status_code}"
            response.close()
        except Exception as exc:  # noqa: BLE001 - best effort by design
            problem = type(exc).__name__
        if problem is None:
            self.sent += 1
            if self._failing.get(what):
                logger.info("monitor: {} to {} works again", what, _shown(url))
            self._failing[what] = False
            return
        self.failed += 1
        if not self._failing.get(what):
            logger.warning(
                "monitor: {} to {} failed ({}); will keep trying, best effort",
                what,
                _shown(url),
                problem,
            )
        self._failing[what] = True
