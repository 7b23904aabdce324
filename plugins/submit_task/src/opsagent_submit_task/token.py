"""The operator's PanDA OIDC token: read once, checked, copied -- never written.

panda-client keeps its login in ``$PANDA_CONFIG_ROOT/.token``: a JSON object whose
``id_token`` is a JWT (plus a ``refresh_token``).  When the id token is missing, cannot
be decoded, or expires within five minutes, panda-client refreshes it *by rewriting that
file* or, failing that, deletes it and starts an interactive device login -- which,
without a terminal, breaks every later submission until a person logs in again.

So this capability opens the operator's file only for reading, refuses to go on unless
the id token stays valid for the whole submission plus panda-client's five-minute
margin, and gives prun a private copy in a directory of its own (``Job.private_dir``:
off the shared cache, on tmpfs where there is one).  Whatever panda-client does to its
copy, the operator's file keeps its bytes and its mtime.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Any

import attrs
from opsagent import Credential

#: panda-client refreshes an id token that expires within this many seconds
#: (``openidc_utils.check_token``: ``delta < timedelta(minutes=5)``).
PANDA_CLIENT_REFRESH_MARGIN = 300.0

#: The file name panda-client reads under ``$PANDA_CONFIG_ROOT``.
TOKEN_BASENAME = ".token"  # noqa: S105 - a file name, not a secret

REMEDY = (
    "renew the operator's login: as the operator, run any panda-client command "
    "interactively (e.g. `pbook`) with PANDA_AUTH=oidc, the same PANDA_AUTH_VO and "
    "PANDA_CONFIG_ROOT, and complete the device login"
)


class TokenUnavailable(Exception):
    """The token cannot be used for a submission; the message says why and what to do."""


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _claims(jwt: str) -> dict[str, Any]:
    parts = jwt.split(".")
    if len(parts) != 3:
        raise ValueError("the id_token is not a JWT (expected three dot-separated parts)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the id_token payload cannot be decoded ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise ValueError("the id_token payload is not a JSON object")
    return claims


@attrs.frozen(repr=False)
class PandaToken:
    """The bytes of the operator's token file and what panda-client will read from them."""

    source: str
    raw: bytes
    id_token: str
    claims: dict[str, Any]

    def __repr__(self) -> str:
        return f"PandaToken(source={self.source!r}, expires={_utc(self.expires_at)})"

    @property
    def expires_at(self) -> float:
        return float(self.claims["exp"])

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a reason or a log (redacted from prun output)."""
        out = [self.id_token]
        try:
            refresh = json.loads(self.raw).get("refresh_token")
        except ValueError:
            refresh = None
        if isinstance(refresh, str) and len(refresh) >= 8:
            out.append(refresh)
        return tuple(out)

    def check(self, needed: float, now: float | None = None) -> None:
        """Raise :class:`TokenUnavailable` unless the id token outlives ``needed`` seconds.

        ``needed`` is the submission's own budget; panda-client's refresh margin is added,
        because inside that margin prun would try to rewrite the file.
        """
        now = time.time() if now is None else now
        left = self.expires_at - now
        if left <= 0:
            raise TokenUnavailable(
                f"panda_oidc_token ({self.source}) expired at {_utc(self.expires_at)}; {REMEDY}"
            )
        want = needed + PANDA_CLIENT_REFRESH_MARGIN
        if left < want:
            raise TokenUnavailable(
                f"panda_oidc_token ({self.source}) expires at {_utc(self.expires_at)}, in "
                f"{left:.0f} s: a submission needs {want:.0f} s ({needed:.0f} s of budget plus "
                f"panda-client's {PANDA_CLIENT_REFRESH_MARGIN:.0f} s refresh margin, inside "
                f"which prun would rewrite the token or start an interactive login); {REMEDY}"
            )


def load(cred: Credential) -> PandaToken:
    """Read the operator's token (file or value) without modifying it; check its shape.

    Raises :class:`TokenUnavailable` for a missing, unreadable or malformed token.
    """
    if cred.path is not None:
        source = str(cred.path)
        try:
            with open(cred.path, "rb") as f:  # read-only, never rewritten
                raw = f.read(1 << 20)
        except FileNotFoundError:
            raise TokenUnavailable(f"panda_oidc_token: {source} does not exist; {REMEDY}") from None
        except OSError as exc:
            raise TokenUnavailable(
                f"panda_oidc_token: cannot read {source}: {exc.strerror}"
            ) from None
    else:
        source = "<value>"
        raw = (cred.value or "").encode()
    if not raw.strip():
        raise TokenUnavailable(f"panda_oidc_token ({source}) is empty; {REMEDY}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise TokenUnavailable(
            f"panda_oidc_token ({source}) is not panda-client's token file (expected JSON with "
            f"an id_token, as written to $PANDA_CONFIG_ROOT/.token); {REMEDY}"
        ) from None
    id_token = doc.get("id_token") if isinstance(doc, dict) else None
    if not isinstance(id_token, str) or not id_token:
        raise TokenUnavailable(f"panda_oidc_token ({source}) has no id_token; {REMEDY}")
    try:
        claims = _claims(id_token)
    except ValueError as exc:
        raise TokenUnavailable(f"panda_oidc_token ({source}): {exc}; {REMEDY}") from None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise TokenUnavailable(f"panda_oidc_token ({source}): the id_token has no numeric exp")
    missing = [c for c in ("name", "preferred_username") if not claims.get(c)]
    if missing:
        # prun derives the user name and the nickname (Rucio account) from these and
        # stops with a traceback when they are missing.
        raise TokenUnavailable(
            f"panda_oidc_token ({source}): the id_token lacks {', '.join(missing)}"
        )
    return PandaToken(source=source, raw=raw, id_token=id_token, claims=claims)
