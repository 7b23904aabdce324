"""Finding where a log tarball can be read from: Rucio ``list_replicas``.

``root://`` (and the other xrootd schemes) first, then any other scheme ``xrdcp`` can
read, each group in Rucio's priority order.  ``file://`` and schemes ``xrdcp`` cannot
read are left out: a PFN must never make the agent copy a local file.  The client's
login token is kept in the job's private work area and dies with it
(:func:`opsagent.rucio_client`), so two servers or two identities never share a token
file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
from opsagent import Job, rucio_client
from rucio.common.exception import DataIdentifierNotFound, RucioException

from opsagent_fetch_payload_log.config import PASSWORD

XROOTD_SCHEMES = ("root", "roots", "xroot", "xroots")
OTHER_SCHEMES = ("https", "davs", "http", "dav")
_PFN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://[^\s\x00-\x1f\x7f]+")


class ResolveFailed(Exception):
    """No usable replica; the message starts with ``rucio:``."""


@attrs.frozen
class Replica:
    pfn: str
    rse: str
    scheme: str
    priority: int


@attrs.frozen
class Found:
    replicas: list[Replica]
    bytes: int | None


def shown_pfn(pfn: str) -> str:
    """A PFN for a message: without its query, which may carry a signature."""
    return pfn.split("?", 1)[0]


def rank(found: dict[str, Any]) -> list[Replica]:
    """The copyable PFNs of one ``list_replicas`` entry, best first."""
    out = []
    for pfn, meta in (found.get("pfns") or {}).items():
        m = _PFN.fullmatch(pfn) if isinstance(pfn, str) else None
        if m is None:
            continue
        scheme = m["scheme"]
        if scheme not in XROOTD_SCHEMES + OTHER_SCHEMES:
            continue
        meta = meta if isinstance(meta, dict) else {}
        prio = meta.get("priority")
        out.append(
            Replica(
                pfn, str(meta.get("rse", "?")), scheme, prio if isinstance(prio, int) else 1 << 30
            )
        )
    order = XROOTD_SCHEMES + OTHER_SCHEMES
    out.sort(key=lambda r: (r.scheme not in XROOTD_SCHEMES, r.priority, order.index(r.scheme)))
    return out


def _password(cfg: Any, job: Job) -> str:
    try:
        return job.credential(PASSWORD).read()
    except LookupError:
        if cfg.password:  # the deprecated [capability.fetch_payload_log] password
            return str(cfg.password)
    except OSError as exc:
        raise ResolveFailed(f"rucio: cannot read the {PASSWORD} credential: {exc}") from None
    raise ResolveFailed(
        f"rucio: auth_type = userpass needs the password: configure "
        f"[credentials.{PASSWORD}] file = ... (or env = ...)"
    )


def _client(cfg: Any, job: Job, proxy: Path | None, token_dir: Path) -> Any:
    if cfg.auth_type == "userpass":
        auth_type = "userpass"
        creds = {"username": cfg.username, "password": _password(cfg, job)}
    else:
        auth_type, creds = "x509_proxy", {"client_proxy": str(proxy) if proxy else None}
    return rucio_client(
        token_dir,
        rucio_host=cfg.rucio_url,
        auth_host=cfg.rucio_auth_url or cfg.rucio_url,
        account=cfg.account,
        ca_cert=cfg.ca_cert,
        auth_type=auth_type,
        creds=creds,
        timeout=cfg.rucio_timeout,
        vo=cfg.vo,
        user_agent="opsagent-fetch-payload-log",
    )


def _rucio_error(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def login(cfg: Any, job: Job, *, proxy: Path | None, token_dir: Path) -> Any:
    """A Rucio client logged in as configured, or :class:`ResolveFailed` saying why not."""
    if not cfg.rucio_url:
        raise ResolveFailed(
            "rucio: no server configured; set rucio_url in [capability.fetch_payload_log] "
            "or RUCIO_URL (and add it to [host] env_allow)"
        )
    try:
        return _client(cfg, job, proxy, token_dir)
    except (RucioException, OSError) as exc:
        raise ResolveFailed(
            f"rucio: cannot log in to {cfg.rucio_auth_url or cfg.rucio_url} as account "
            f"{cfg.account} ({cfg.auth_type}): {_rucio_error(exc)}"
        ) from None


def resolve(
    scope: str, name: str, cfg: Any, job: Job, *, proxy: Path | None, token_dir: Path
) -> Found:
    """The copyable replicas of ``scope:name``, best first, or :class:`ResolveFailed`."""
    did = f"{scope}:{name}"
    client = login(cfg, job, proxy=proxy, token_dir=token_dir)
    try:
        entries = list(
            client.list_replicas([{"scope": scope, "name": name}], ignore_availability=False)
        )
        replicas = [r for e in entries for r in rank(e)]
        if replicas:
            sizes = [e.get("bytes") for e in entries if isinstance(e.get("bytes"), int)]
            return Found(replicas, sizes[0] if sizes else None)
        if any(e.get("pfns") for e in entries):
            listed = sorted({shown_pfn(p) for e in entries for p in e.get("pfns") or {}})
            raise ResolveFailed(
                f"rucio: no replica of {did} readable with xrdcp (found: {', '.join(listed)})"
            )
        try:
            client.get_did(scope, name)
        except DataIdentifierNotFound:
            raise ResolveFailed(f"rucio: unknown DID {did}") from None
        raise ResolveFailed(f"rucio: no replica for {did}")
    except RucioException as exc:
        raise ResolveFailed(
            f"rucio: listing replicas of {did} failed: {_rucio_error(exc)}"
        ) from None
    except OSError as exc:  # requests' connection errors
        raise ResolveFailed(f"rucio: {cfg.rucio_url} unreachable: {_rucio_error(exc)}") from None
