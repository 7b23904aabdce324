"""The declaration of ``fetch_payload_log``: input, configuration, limits, events.

Everything the host needs to know is in :func:`declaration`; the work is
:func:`opsagent_fetch_payload_log.fetch.fetch`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from opsagent import Capability, Digits, Job, hookimpl, pattern
from opsagent.schema import FieldError

from opsagent_fetch_payload_log.fetch import fetch

#: What Rucio's generic schema accepts for a scope and a DID name (rucio.common.schema).
SCOPE = r"[A-Za-z0-9_.-]{1,25}"
NAME = r"[/A-Za-z0-9][/A-Za-z0-9._-]{0,249}"
TEXT = r"[^\x00-\x1f\x7f]{1,256}"
AUTH_TYPES = ("x509", "userpass")


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


def _env(name: str, default: str) -> Callable[[], str]:
    return lambda: os.environ.get(name) or default


def _positive(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise FieldError(attr.name, f"expected a positive number, got {value!r}")


def _auth_type(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if value not in AUTH_TYPES:
        raise FieldError(attr.name, f"expected one of {', '.join(AUTH_TYPES)}, got {value!r}")


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name}: expected a positive number of seconds, got {raw!r}")
    return value


@attrs.frozen
class FetchConfig:
    """``[capability.fetch_payload_log]``; the defaults come from the old agent's variables."""

    #: Rucio server; ``RUCIO_URL``.
    rucio_url: str = attrs.Factory(_env("RUCIO_URL", ""))
    #: Rucio authentication server; ``RUCIO_AUTH_URL``, else ``rucio_url``.
    rucio_auth_url: str = attrs.Factory(_env("RUCIO_AUTH_URL", ""))
    #: ``x509`` (the x509_proxy credential; production) or ``userpass`` (test servers).
    auth_type: str = attrs.field(default="x509", validator=_auth_type)
    account: str = attrs.Factory(_env("RUCIO_ACCOUNT", "panda"))
    vo: str = attrs.Factory(_env("RUCIO_VO", "def"))
    username: str = ""
    password: str = attrs.field(default="", repr=False, metadata={"secret": True})
    #: CA certificates for an https Rucio server (file or directory); ``X509_CERT_DIR``.
    ca_cert: str | None = attrs.Factory(lambda: os.environ.get("X509_CERT_DIR") or None)
    rucio_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: xrdcp's own limit, over all replicas tried; ``EPICPROD_XRDCP_TIMEOUT``.
    xrdcp_timeout: float = attrs.field(
        factory=lambda: _seconds("EPICPROD_XRDCP_TIMEOUT", 120.0), validator=_positive
    )
    max_tarball_bytes: int = attrs.field(default=4 << 30, validator=_positive)
    max_members: int = attrs.field(default=10_000, validator=_positive)
    max_member_bytes: int = attrs.field(default=1 << 30, validator=_positive)
    max_total_bytes: int = attrs.field(default=4 << 30, validator=_positive)
    #: fsync the files, ``.done`` and the directory before they are put in place.
    fsync: bool = True

    def __attrs_post_init__(self) -> None:
        if self.auth_type == "userpass" and not (self.username and self.password):
            raise FieldError("username", "auth_type = userpass needs username and password")


def declaration() -> Capability:
    return Capability(
        msg_type="fetch_payload_log",
        input=FetchInput,
        doer=fetch,
        events={"ok": "payload_log_ready", "error": "payload_log_failed"},
        time_limit=_seconds("EPICPROD_FETCH_TIMEOUT", 180.0),
        credentials=("x509_proxy",),
        dedup_key=lambda inp: f"{inp.jeditaskid}/{inp.pandaid}",
        echo=lambda inp: {"pandaid": inp.pandaid, "jeditaskid": inp.jeditaskid},
        isolation="process",
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
def capability_checks(capability: Capability, job: Job, register: Callable[[Any], None]) -> None:
    """``opsagent selftest``: a Rucio login as configured, and the cache tree, read only.

    The host itself checks the proxy (mode, expiry) and that xrdcp is on the path.
    """
    from opsagent.cli.selftest import Check

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
            replicas.login(cfg, proxy=proxy_path, token_dir=Path(tokens))
            where = cfg.rucio_auth_url or cfg.rucio_url
            register(Check.ok("rucio", f"logged in to {where} as {cfg.account} ({cfg.auth_type})"))
        except replicas.ResolveFailed as exc:
            register(Check.fail("rucio", str(exc)))
    try:
        register(Check.ok("cache", Cache(job.cache_dir).inspect()))
    except CacheError as exc:
        register(Check.fail("cache", str(exc)))
