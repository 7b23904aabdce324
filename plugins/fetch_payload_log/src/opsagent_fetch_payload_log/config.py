"""``[capability.fetch_payload_log]``: where Rucio is, how to log in, and the limits.

The defaults come from the old agent's variables (``RUCIO_URL``, ``RUCIO_ACCOUNT``,
``X509_CERT_DIR``, ``EPICPROD_XRDCP_TIMEOUT``...).  The job's own time limit is the
host's: 180 s, ``time_limit`` here, or the old ``EPICPROD_FETCH_TIMEOUT``.
"""

from __future__ import annotations

from typing import Any

import attrs
from opsagent import FieldError, from_env, positive

AUTH_TYPES = ("x509", "userpass")
#: The credential holding the Rucio password (``auth_type = "userpass"``).
PASSWORD = "rucio_userpass"  # noqa: S105 - a credential's name, not a secret


def _auth_type(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if value not in AUTH_TYPES:
        raise FieldError(attr.name, f"expected one of {', '.join(AUTH_TYPES)}, got {value!r}")


def _seconds(name: str, raw: str) -> float:
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
    rucio_url: str = from_env("RUCIO_URL", default="")
    #: Rucio authentication server; ``RUCIO_AUTH_URL``, else ``rucio_url``.
    rucio_auth_url: str = from_env("RUCIO_AUTH_URL", default="")
    #: ``x509`` (the x509_proxy credential; production) or ``userpass`` (test servers:
    #: ``username`` here, the password in the ``rucio_userpass`` credential).
    auth_type: str = attrs.field(default="x509", validator=_auth_type)
    account: str = from_env("RUCIO_ACCOUNT", default="panda")
    vo: str = from_env("RUCIO_VO", default="def")
    username: str = ""
    #: Deprecated: configure the ``rucio_userpass`` credential instead; used only when
    #: that credential is not configured.
    password: str = attrs.field(default="", repr=False, metadata={"secret": True})
    #: CA certificates for an https Rucio server (file or directory); ``X509_CERT_DIR``.
    ca_cert: str | None = from_env("X509_CERT_DIR", default=None)
    rucio_timeout: float = attrs.field(default=30.0, validator=positive)
    #: xrdcp's own limit, over all replicas tried; ``EPICPROD_XRDCP_TIMEOUT``.
    xrdcp_timeout: float = from_env(
        "EPICPROD_XRDCP_TIMEOUT",
        default=120.0,
        parse=lambda raw: _seconds("EPICPROD_XRDCP_TIMEOUT", raw),
        validator=positive,
    )
    max_tarball_bytes: int = attrs.field(default=4 << 30, validator=positive)
    max_members: int = attrs.field(default=10_000, validator=positive)
    max_member_bytes: int = attrs.field(default=1 << 30, validator=positive)
    max_total_bytes: int = attrs.field(default=4 << 30, validator=positive)
    #: fsync the files, ``.done`` and the directory before they are put in place.
    fsync: bool = True

    def __attrs_post_init__(self) -> None:
        if self.auth_type == "userpass" and not self.username:
            raise FieldError(
                "username",
                f"auth_type = userpass needs username (and the {PASSWORD} credential)",
            )
