"""The doer: from a request to a cached log (or an ``.error`` saying why not).

Steps: check the proxy again, the host's way (it may have expired since the host did);
clean what killed jobs left; take the job's lock; if cached (and not ``force``) answer
at once; resolve the replica with Rucio; copy it with xrdcp into the job's work area;
extract the kept members into a fresh directory there; write ``.done``; swap the
directory into place.

``.error`` counts failed attempts only, as the old agent's did: the web view refuses to
retry at ``attempts >= 3``, so a count that included the attempt in progress would show
"failed 3 times" while the third attempt runs.  Before each step that can hang or fail
the job writes ``.running`` (the attempt's number and step) and leaves ``.error`` alone.
A handled failure, SIGTERM at the time limit included, writes ``.error`` with one more
attempt and removes ``.running``; success swaps in a directory with neither.  A job
killed outright (SIGKILL, lost with its host) leaves ``.running`` behind, and the next
attempt, holding the job's lock, counts it as one failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from opsagent import CredentialError, Job, JobFailed, Outcome, check_credential

from opsagent_fetch_payload_log import replicas, xrdcp
from opsagent_fetch_payload_log.cache import (
    Cache,
    CacheError,
    Slot,
    WorkArea,
    make_job_dir,
    write_file,
)
from opsagent_fetch_payload_log.config import FetchConfig
from opsagent_fetch_payload_log.extract import Limits, TarballRejected, extract

DOWNLOAD = "log.tgz"
NEW = "new"


class ProxyUnusable(Exception):
    """The proxy cannot be used; the message says why and what to do."""


class Stopped(BaseException):
    """SIGTERM from the host (time limit or shutdown) during an interruptible step.

    A BaseException so that library code catching ``Exception`` does not swallow it.
    """


class _Term:
    """Turns SIGTERM into :class:`Stopped` while a step may be interrupted."""

    def __init__(self) -> None:
        self.requested = False
        self.interruptible = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _Term:
        # Signal handlers can only be set from the main thread (a process-isolated job).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_term)
            self._installed = True
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_term(self, _signum: int, _frame: object) -> None:
        self.requested = True
        if self.interruptible:
            self.interruptible = False
            raise Stopped

    def check(self) -> None:
        if self.requested:
            self.interruptible = False
            raise Stopped


def _process_age() -> float:
    """Seconds since this process was started (forked for the job); 0 when unknown."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class _Attempt:
    """One attempt at fetching: its number, its current step, recorded in ``.running``."""

    def __init__(
        self, slot: Slot, work: WorkArea, attempts: int, limit: float, term: _Term
    ) -> None:
        self.slot = slot
        self.work = work
        self.attempts = attempts
        self.limit = limit
        self.term = term
        self.step = "starting"
        self.started = time.monotonic()

    def begin(self, step: str) -> None:
        self.term.interruptible = False
        self.term.check()
        self.step = step
        self.slot.write_running(self.work, self.attempts, step)
        self.term.interruptible = True
        self.term.check()

    def settle(self) -> None:
        """End of the interruptible part: from here on the job runs to its end."""
        self.term.interruptible = False
        self.term.check()

    def stopped_reason(self) -> str:
        # The host's clock started when it started the job's process, before this attempt.
        elapsed = max(time.monotonic() - self.started, _process_age())
        # Starting the process can take a second on a loaded machine.
        if elapsed >= self.limit - max(1.0, 0.1 * self.limit):
            return f"timeout: {self.step} did not finish within the time limit of {self.limit:g} s"
        return f"stopped by the host after {elapsed:.0f} s during {self.step}"


def _proxy_path(job: Job) -> Path:
    try:
        cred = job.credential("x509_proxy")
    except LookupError as exc:
        raise ProxyUnusable(f"x509 proxy: {exc}") from None
    if cred.path is None:
        raise ProxyUnusable(
            "x509 proxy: the x509_proxy credential reached the job as a value, not as a file; "
            "configure [credentials.x509_proxy] file = <absolute path>"
        )
    try:
        check_credential(cred, kind="x509")
    except CredentialError as exc:
        expired = getattr(exc, "credential", None)
        if expired is not None and expired.expires_at is not None:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expired.expires_at))
            raise ProxyUnusable(
                f"x509 proxy {cred.path} expired at {when}; renew it with voms-proxy-init"
            ) from None
        raise ProxyUnusable(f"x509 proxy: {exc}") from None
    return cred.path


def _copy_env(job: Job, proxy_path: Path) -> dict[str, str]:
    env = {k: v for k, v in job.env.items() if not k.startswith("OPSAGENT_CREDENTIAL_")}
    env["X509_USER_PROXY"] = str(proxy_path)
    return env


def _recorded(cache: Cache, inp: Any) -> int:
    """The attempts already in ``.error``, read without creating anything."""
    path = cache.logs / inp.jeditaskid / inp.pandaid
    if not path.is_dir() or path.is_symlink() or path.parent.is_symlink():
        return 0
    try:
        slot = cache.slot(inp.jeditaskid, inp.pandaid)
    except (CacheError, OSError):
        return 0
    try:
        return slot.failures()
    finally:
        slot.close()


def fetch(inp: Any, job: Job) -> Outcome:
    """Fetch the log of PanDA job ``inp.pandaid`` into the cache; see the module docstring."""
    cfg = job.config if job.config is not None else FetchConfig()
    cache = Cache(job.cache_dir)
    try:
        proxy_path = _proxy_path(job)
    except ProxyUnusable as exc:
        raise JobFailed(str(exc), error=str(exc), attempts=_recorded(cache, inp)) from None
    try:
        cache.prepare()
        removed = cache.clean_leftovers()
        slot = cache.slot(inp.jeditaskid, inp.pandaid)
    except (CacheError, OSError) as exc:
        reason = f"cache: {exc}"
        raise JobFailed(reason, error=reason, attempts=0) from None
    if removed:
        job.log.info("removed leftovers of killed jobs: {}", ", ".join(removed))
    job.log.info(
        "log of PanDA job {} (task {}) from {}:{}{}{}",
        inp.pandaid,
        inp.jeditaskid,
        inp.scope,
        inp.lfn,
        ", forced" if inp.force else "",
        f", requested by {inp.requested_by}" if inp.requested_by else "",
    )
    try:
        before = slot.done_identity()
        lock = cache.job_lock(inp.jeditaskid, inp.pandaid)
        try:
            lock.acquire(timeout=job.time_limit)
        except TimeoutError as exc:
            raise JobFailed(str(exc), error=str(exc), attempts=slot.failures()) from None
        try:
            members = slot.done()
            fresh = lock.waited and slot.done_identity() != before
            if members is not None and (not inp.force or fresh):
                job.log.info("{} already cached ({})", slot.path, ",".join(members))
                return Outcome.ok(path=str(slot.path), members=members, cached=True)
            return _fetch(inp, job, cfg, cache, slot, proxy_path)
        finally:
            lock.release()
    finally:
        slot.close()


def _fetch(inp: Any, job: Job, cfg: Any, cache: Cache, slot: Slot, proxy_path: Path) -> Outcome:
    did = f"{inp.scope}:{inp.lfn}"
    attempts = slot.attempts() + 1
    work = cache.work_area(inp.jeditaskid, inp.pandaid)
    copier: list[int] = []
    reason: str | None = None
    with _Term() as term:
        attempt = _Attempt(slot, work, attempts, job.time_limit, term)
        try:
            attempt.begin(f"rucio: resolving {did}")
            marks = [time.monotonic()]
            found = replicas.resolve(
                inp.scope, inp.lfn, cfg, job, proxy=proxy_path, token_dir=work.path / "rucio"
            )
            if found.bytes is not None and found.bytes > cfg.max_tarball_bytes:
                raise replicas.ResolveFailed(
                    f"rucio: {did} is {found.bytes} bytes, over the cap of "
                    f"{cfg.max_tarball_bytes} (max_tarball_bytes)"
                )
            download = work.path / DOWNLOAD
            marks.append(time.monotonic())
            pfn = _copy(
                attempt,
                found.replicas,
                download,
                _copy_env(job, proxy_path),
                cfg.xrdcp_timeout,
                copier,
                job,
            )
            marks.append(time.monotonic())
            attempt.begin(f"extracting {did}")
            new_fd = make_job_dir(work.fd, NEW, slot.gid)
            try:
                got = extract(
                    download,
                    new_fd,
                    Limits(cfg.max_members, cfg.max_member_bytes, cfg.max_total_bytes),
                    sync=cfg.fsync,
                    checkpoint=term.check,
                )
                attempt.settle()
                write_file(new_fd, ".done", (",".join(got.members) + "\n").encode(), sync=cfg.fsync)
                if cfg.fsync:
                    os.fsync(new_fd)
            finally:
                os.close(new_fd)
            marks.append(time.monotonic())
            download.unlink()
            slot.install(work, NEW)
            marks.append(time.monotonic())
        except Stopped:
            reason = attempt.stopped_reason()
        except (replicas.ResolveFailed, xrdcp.CopyFailed, TarballRejected) as exc:
            reason = str(exc)
        except (CacheError, OSError) as exc:
            reason = f"{attempt.step}: {exc}"
        except Exception as exc:
            job.log.opt(exception=True).error("fetch of {} failed unexpectedly", did)
            reason = f"{attempt.step}: unexpected {type(exc).__name__}: {exc}"
        finally:
            term.interruptible = False
            for pgid in copier:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        try:
            if reason is not None:
                reason = reason[:2000]
                slot.write_error(work, attempts, reason)
                job.log.warning("{} attempt {} failed: {}", slot.path, attempts, reason)
                raise JobFailed(reason, error=reason, attempts=attempts)
        finally:
            work.close()
    steps = ", ".join(
        f"{name} {b - a:.3f} s"
        for name, a, b in zip(
            ("rucio", "xrdcp", "extraction", "install"), marks, marks[1:], strict=False
        )
    )
    job.log.info(
        "{} cached from {} ({}; {} bytes; {})",
        slot.path,
        replicas.shown_pfn(pfn),
        ",".join(got.members),
        got.bytes_written,
        steps,
    )
    if got.skipped:
        job.log.warning("{}: skipped unsafe members: {}", did, "; ".join(got.skipped[:20]))
    return Outcome.ok(path=str(slot.path), members=got.members, cached=False)


def _copy(
    attempt: _Attempt,
    candidates: list[replicas.Replica],
    download: Path,
    env: dict[str, str],
    budget: float,
    copier: list[int],
    job: Job,
) -> str:
    """Copy the first replica that works, within ``budget`` seconds in all.

    A dead endpoint keeps xrdcp retrying for minutes, so each replica gets an equal
    share of what is left, and the last one all of it.
    """
    failures: list[str] = []
    deadline = time.monotonic() + budget
    for i, replica in enumerate(candidates):
        share = (deadline - time.monotonic()) / (len(candidates) - i)
        attempt.begin(f"xrdcp from {replicas.shown_pfn(replica.pfn)}")
        try:
            seconds = xrdcp.copy(
                replica.pfn, download, env=env, timeout=share, on_start=copier.append
            )
        except xrdcp.CopyFailed as exc:
            copier.clear()  # run() has killed its group
            job.log.warning("{}", exc)
            failures.append(str(exc))
            continue
        # On Stopped the group is still recorded, and killed by the caller.
        copier.clear()
        job.log.debug("copied {} in {:.2f} s", replicas.shown_pfn(replica.pfn), seconds)
        return replica.pfn
    raise xrdcp.CopyFailed("; ".join(failures))
