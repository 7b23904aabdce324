"""Capability ``fetch_payload_log``: a PanDA job's log from Rucio over xrootd into the
shared cache, safely.

The declaration below is the whole contract with the host; the doer is
:func:`opsagent_fetch_payload_log.fetch.fetch`, its settings
:class:`opsagent_fetch_payload_log.config.FetchConfig`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import attrs
from opsagent import Capability, Check, Digits, Job, hookimpl, pattern

from opsagent_fetch_payload_log.config import PASSWORD, FetchConfig
from opsagent_fetch_payload_log.fetch import fetch

__all__ = ["FetchConfig", "FetchInput", "capability_checks", "declaration", "fetch"]
__version__ = "0.1.0"

#: What Rucio's generic schema accepts for a scope and a DID name (rucio.common.schema).
SCOPE = r"[A-Za-z0-9_.-]{1,25}"
NAME = r"[/A-Za-z0-9][/A-Za-z0-9._-]{0,249}"
TEXT = r"[^\x00-\x1f\x7f]{1,256}"


@attrs.frozen
class FetchInput:
    """A request for the log tarball of one PanDA job."""

    scope: str = attrs.field(
        validator=pattern(SCOPE, "a Rucio scope (1-25 of A-Z a-z 0-9 _ . -)"),
        metadata={"description": "Rucio scope of the log tarball"},
    )
    lfn: str = attrs.field(
        validator=pattern(NAME, "a Rucio file name (1-250 of A-Z a-z 0-9 / _ . -)"),
        metadata={"description": "Rucio name of the log tarball (...log.tgz)"},
    )
    jeditaskid: Digits = attrs.field(metadata={"description": "JEDI task id"})
    pandaid: Digits = attrs.field(metadata={"description": "PanDA job id"})
    force: bool = attrs.field(
        default=False, metadata={"description": "fetch again even when cached"}
    )
    requested_by: str | None = attrs.field(
        default=None,
        validator=pattern(TEXT, "printable text of at most 256 characters"),
        metadata={"description": "who asked (attribution, logged)"},
    )


def declaration() -> Capability:
    return Capability(
        msg_type="fetch_payload_log",
        input=FetchInput,
        doer=fetch,
        events={"ok": "payload_log_ready", "error": "payload_log_failed"},
        time_limit=180,
        time_limit_env="EPICPROD_FETCH_TIMEOUT",
        # The Rucio password is needed only with auth_type = userpass (test servers).
        credentials=("x509_proxy", PASSWORD),
        optional_credentials=(PASSWORD,),
        dedup_key=lambda inp: f"{inp.jeditaskid}/{inp.pandaid}",
        echo=lambda inp: {"pandaid": inp.pandaid, "jeditaskid": inp.jeditaskid},
        # The old agent's action record (username: requested_by).
        action="payload_log_fetch",
        subject_type="panda_job",
        subject_key=lambda inp: inp.pandaid,
        sublevel="normal",
        config=FetchConfig,
        programs=("xrdcp",),
        description=(
            "Fetch a PanDA job's log tarball (Rucio replica, xrdcp) and extract payload.stdout, "
            "payload.stderr, pilotlog.txt and pandatracerlog.txt into "
            "$SWF_TMP_DIR/panda-logs/<jeditaskid>/<pandaid>/ (.done on success, .error on failure)."
        ),
        samples=(
            {
                "scope": "epic",
                "lfn": "panda.demo.1001.000001.log.tgz",
                "jeditaskid": "1001",
                "pandaid": "4242",
            },
        ),
    )


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(declaration())


@hookimpl
def capability_checks(capability: Capability, job: Job, register: Callable[[Check], None]) -> None:
    """``opsagent selftest``: a Rucio login as configured, and the cache tree, read only.

    The host itself checks the proxy (mode, expiry) and that xrdcp is on the path.
    """
    from opsagent_fetch_payload_log import replicas
    from opsagent_fetch_payload_log.cache import Cache, CacheError

    if capability.msg_type != "fetch_payload_log":
        return
    cfg = job.config if job.config is not None else FetchConfig()
    try:
        proxy_path = job.credential("x509_proxy").path
    except LookupError:
        proxy_path = None
    with tempfile.TemporaryDirectory(prefix="opsagent-rucio-") as tokens:
        try:
            replicas.login(cfg, job, proxy=proxy_path, token_dir=Path(tokens))
            where = cfg.rucio_auth_url or cfg.rucio_url
            register(Check.ok("rucio", f"logged in to {where} as {cfg.account} ({cfg.auth_type})"))
        except replicas.ResolveFailed as exc:
            register(Check.fail("rucio", str(exc)))
    try:
        register(Check.ok("cache", Cache(job.cache_dir).inspect()))
    except CacheError as exc:
        register(Check.fail("cache", str(exc)))
