"""OIDC tokens the host renews before they expire, written back where they were found.

A credential with a ``[renewal.<name>]`` table is a token file in panda-client's format
(the token endpoint's JSON answer: ``id_token``, ``access_token``, ``refresh_token``,
...).  A :class:`Renewer` thread renews it well before it expires:

- ``grant = "refresh_token"``: with the file's own refresh token, as panda-client itself
  does (``openidc_utils.refresh_token``), for the operator's login;
- ``grant = "client_credentials"``: with a service account's client id and secret (the
  secret is another credential), for a robot that needs no person at all.

The new token is written back atomically (a new file in the same directory, fsynced, then
renamed over the old one) with the old file's mode, so the operator's own ``prun`` and
``pathena`` read it, and a job that already copied the old token keeps a consistent copy.
Two hosts sharing one token file take an exclusive ``flock`` on its directory around
read-check-renew-write: the second one re-reads the file under the lock, finds it fresh
and leaves it alone, so no renewal is lost and a rotated refresh token is never used
twice.

When to renew is measured on the token's own clock: the issuer's ``iat`` and ``exp``
give the lifetime, and the difference between the host's clock and ``iat`` when the host
itself received a token gives the skew, so a host whose clock runs ahead or behind the
issuer's renews neither in a loop nor too late.  A failed renewal is retried with a
doubling delay and reported (the status line, the metrics, the monitor's heartbeat,
``opsagent selftest``) while the old token still has most of its margin: it never
touches a job that is running.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
from loguru import logger

from opsagent.credentials.store import CredentialSource

GRANTS = ("refresh_token", "client_credentials")
#: The most a token endpoint's answer may be.
MAX_ANSWER = 1 << 20


class RenewalError(RuntimeError):
    """One renewal that failed; the message says why and what to do, never a secret."""


@attrs.frozen
class RenewalConfig:
    """``[renewal.<credential>]``: how the host keeps one token file fresh."""

    #: ``refresh_token`` (the file's own) or ``client_credentials`` (a service account).
    grant: str = attrs.field(validator=attrs.validators.in_(GRANTS))
    #: The OIDC client: panda-client's (its auth config's ``client_id``) for
    #: ``refresh_token``, the service account's for ``client_credentials``.
    client_id: str = attrs.field(validator=attrs.validators.min_len(1))
    #: The issuer (its ``/.well-known/openid-configuration`` names the token endpoint) ...
    issuer: str = ""
    #: ... or the token endpoint itself.
    token_endpoint: str = ""
    #: The name of the credential holding the client secret (a confidential client; the
    #: service account of ``client_credentials``).
    client_secret_credential: str = ""
    #: The scopes asked for (``openid``: the answer has the ``id_token`` PanDA wants).
    scope: str = "openid profile email"
    #: Renew when less than this is left of the token's life (at most 90 % of its
    #: lifetime: a short-lived token is renewed once it is a tenth of its life old).
    before_seconds: float = 1200.0
    #: First retry after a failure; doubles up to ``retry_max_seconds``.
    retry_seconds: float = 10.0
    #: The longest delay between two tries after failures.
    retry_max_seconds: float = 300.0
    #: Of each request to the issuer.
    timeout_seconds: float = 10.0
    #: Check the file at least this often (a renewal by another host, a new login).
    check_seconds: float = 60.0

    def __attrs_post_init__(self) -> None:
        if not (self.issuer or self.token_endpoint):
            raise ValueError("renewal: set issuer (or token_endpoint)")
        for url in (self.issuer, self.token_endpoint):
            if url and not url.startswith(("https://", "http://")):
                raise ValueError(f"renewal: {url!r} is not an http(s) URL")
        if self.grant == "client_credentials" and not self.client_secret_credential:
            raise ValueError(
                "renewal: grant client_credentials needs client_secret_credential (the "
                "name of the credential holding the service account's secret)"
            )
        for name in ("before_seconds", "retry_seconds", "retry_max_seconds",
                     "timeout_seconds", "check_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"renewal.{name}: expected > 0, got {getattr(self, name)}")


@attrs.define
class RenewalState:
    """What the host says about one renewed credential (status line, metrics, selftest)."""

    credential: str
    grant: str
    expires_at: float | None = None
    #: When the next look (a renewal when due) happens, host clock.
    next_at: float = 0.0
    renewed_at: float | None = None
    renewals: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _claims(jwt: str) -> dict[str, Any]:
    parts = jwt.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    raw = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("its payload cannot be decoded") from None
    if not isinstance(claims, dict):
        raise ValueError("its payload is not an object")
    return claims


@attrs.frozen
class TokenFile:
    """The parsed token file: the token panda-client sends and its times."""

    data: dict[str, Any]
    issued_at: float
    expires_at: float

    @property
    def lifetime(self) -> float:
        return max(1.0, self.expires_at - self.issued_at)

    @classmethod
    def parse(cls, raw: bytes) -> TokenFile:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        token = data.get("id_token") or data.get("access_token")
        if not isinstance(token, str):
            raise ValueError("no id_token or access_token")
        claims = _claims(token)
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise ValueError("the token has no numeric exp")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            iat = exp - 3600.0
        return cls(data, float(iat), float(exp))


class Renewer:
    """Keeps one token file fresh; ``run`` is its thread, ``renew_if_due`` one look."""

    def __init__(
        self,
        name: str,
        cfg: RenewalConfig,
        sources: Mapping[str, CredentialSource],
        *,
        on_renewed: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        source = sources.get(name)
        if source is None or not (source.file or source.env):
            # Where the old agent's variables say ($PANDA_CONFIG_ROOT/.token...).
            from opsagent.credentials import store

            legacy = store.legacy_source(name)
            source = legacy[0] if legacy is not None else source
        if source is None or not source.file:
            raise ValueError(
                f"renewal.{name}: the credential must be a file the host may rewrite "
                f"(set [credentials.{name}] file = \"...\"); a systemd LoadCredential= "
                f"copy or an environment variable cannot be renewed in place"
            )
        self.name = name
        self.cfg = cfg
        self.path = Path(source.file)
        self.sources = sources
        self.on_renewed = on_renewed
        self.clock = clock
        self.state = RenewalState(name, cfg.grant)
        #: Host clock minus issuer clock, measured when this host received a token.
        self.skew: float | None = None
        self._endpoint: str | None = cfg.token_endpoint or None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.run, name=f"renewal-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.cfg.timeout_seconds + 5)

    def run(self) -> None:
        while not self._stop.is_set():
            self.renew_if_due()
            self._stop.wait(max(0.05, self.state.next_at - self.clock()))

    # -- one look -----------------------------------------------------------------------

    def due_at(self, token: TokenFile) -> float:
        """Host-clock time at which ``token`` should be renewed."""
        before = min(self.cfg.before_seconds, token.lifetime * 0.9)
        return token.expires_at - before + (self.skew or 0.0)

    def _learn_skew(self, token: TokenFile) -> None:
        # A token this host did not receive tells only that the issuer did not issue it in
        # the host's future: one "from the future" shows the host's clock is behind.
        if self.skew is None and self.clock() < token.issued_at:
            self.skew = self.clock() - token.issued_at

    def renew_if_due(self) -> bool:
        """Renew when due; True when this call wrote a new token.  Never raises."""
        now = self.clock()
        try:
            with self._locked_dir() as dir_fd:
                current = self._read(dir_fd)
                if current is not None:
                    self._learn_skew(current)
                if current is not None and self.clock() < self.due_at(current):
                    self.state.expires_at = current.expires_at
                    self._schedule_check(self.due_at(current))
                    return False
                if current is None and self.cfg.grant == "refresh_token":
                    raise RenewalError(
                        f"{self.path} holds no token to refresh: log in again as the "
                        f"operator (any panda-client command with PANDA_AUTH=oidc)"
                    )
                received_at = self.clock()
                answer = self._request(current)
                fresh = TokenFile.parse(answer)
                self._write(dir_fd, answer)
        except (RenewalError, ValueError, OSError) as exc:
            self._failed(now, str(exc))
            return False
        self.skew = received_at - fresh.issued_at
        self.state.expires_at = fresh.expires_at
        self.state.renewed_at = received_at
        self.state.renewals += 1
        self.state.consecutive_failures = 0
        self.state.last_error = None
        self._schedule_check(self.due_at(fresh))
        logger.info(
            "credential {} renewed ({}): valid until {}",
            self.name,
            self.cfg.grant,
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(fresh.expires_at)),
        )
        if self.on_renewed is not None:
            self.on_renewed(self.name)
        return True

    def _schedule_check(self, due: float) -> None:
        self.state.next_at = min(due, self.clock() + self.cfg.check_seconds)

    def _failed(self, now: float, reason: str) -> None:
        self.state.failures += 1
        self.state.consecutive_failures += 1
        self.state.last_error = reason
        delay = min(
            self.cfg.retry_max_seconds,
            self.cfg.retry_seconds * 2 ** (self.state.consecutive_failures - 1),
        )
        self.state.next_at = now + delay
        left = ""
        if self.state.expires_at is not None:
            left = f"; the current token expires in {self.state.expires_at - now:.0f} s"
        logger.warning(
            "credential {} could not be renewed ({}): {}{}; next try in {:.0f} s",
            self.name, self.cfg.grant, reason, left, delay,
        )

    # -- the file -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked_dir(self) -> Iterator[int]:
        """The token's directory, opened and exclusively locked (against another host)."""
        parent = self.path.parent
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise RenewalError(
                    f"{parent} is writable by others: they could swap the token; "
                    f"chmod go-w {parent}"
                )
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def _read(self, dir_fd: int) -> TokenFile | None:
        try:
            fd = os.open(self.path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RenewalError(f"cannot open {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise RenewalError(f"{self.path} is not a regular file")
            raw = f.read(MAX_ANSWER + 1)
        try:
            return TokenFile.parse(raw)
        except ValueError as exc:
            if self.cfg.grant == "client_credentials":
                return None  # the robot makes a new one
            raise RenewalError(f"{self.path}: {exc}") from None

    def _write(self, dir_fd: int, answer: bytes) -> None:
        name = self.path.name
        try:
            mode = stat.S_IMODE(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            mode = 0o600
        mode &= 0o644  # never more than the operator's own file had, never executable
        tmp = f".{name}.renewal.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(answer)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)

    # -- the issuer ---------------------------------------------------------------------

    def token_endpoint(self, session: Any) -> str:
        if self._endpoint is None:
            url = self.cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                r = session.get(url, timeout=self.cfg.timeout_seconds)
                r.raise_for_status()
                endpoint = r.json()["token_endpoint"]
            except Exception as exc:  # noqa: BLE001 - any failure is "the issuer is down"
                raise RenewalError(f"the issuer's discovery {url} failed: {_what(exc)}") from None
            if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
                raise RenewalError(f"the issuer's discovery {url} names no token endpoint")
            self._endpoint = endpoint
        return self._endpoint

    def client_secret(self) -> str:
        from opsagent.credentials import store

        name = self.cfg.client_secret_credential
        try:
            return store.resolve(name, self.sources).read().strip()
        except (store.CredentialError, OSError) as exc:
            raise RenewalError(f"the client secret (credential {name!r}): {exc}") from None

    def _request(self, current: TokenFile | None) -> bytes:
        import requests

        form = {"client_id": self.cfg.client_id, "grant_type": self.cfg.grant,
                "scope": self.cfg.scope}
        if self.cfg.client_secret_credential:
            form["client_secret"] = self.client_secret()
        if self.cfg.grant == "refresh_token":
            refresh = current.data.get("refresh_token") if current is not None else None
            if not isinstance(refresh, str) or not refresh:
                raise RenewalError(
                    f"{self.path} has no refresh_token: log in again as the operator"
                )
            form["refresh_token"] = refresh
        with requests.Session() as session:
            endpoint = self.token_endpoint(session)
            try:
                r = session.post(endpoint, data=form, timeout=self.cfg.timeout_seconds)
            except requests.RequestException as exc:
                raise RenewalError(f"the token endpoint is unreachable: {_what(exc)}") from None
            body = r.content[: MAX_ANSWER + 1]
        if r.status_code != 200:
            error = ""
            with contextlib.suppress(ValueError, AttributeError):
                answer = json.loads(body)
                error = f": {answer.get('error')}"
                if answer.get("error_description"):
                    error += f" ({answer['error_description']})"
            hint = ""
            if "invalid_grant" in error and self.cfg.grant == "refresh_token":
                hint = "; the refresh token is expired or revoked: the operator must log in again"
            raise RenewalError(f"the token endpoint answered {r.status_code}{error[:300]}{hint}")
        if len(body) > MAX_ANSWER:
            raise RenewalError("the token endpoint's answer is larger than 1 MiB")
        try:
            TokenFile.parse(body)
        except ValueError as exc:
            raise RenewalError(f"the token endpoint's answer is unusable: {exc}") from None
        return body


def _what(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def renewers(
    renewal: Mapping[str, RenewalConfig],
    sources: Mapping[str, CredentialSource],
    *,
    on_renewed: Callable[[str], None] | None = None,
) -> list[Renewer]:
    """One renewer per ``[renewal.<name>]`` table (ValueError: a misconfigured one)."""
    return [Renewer(name, cfg, sources, on_renewed=on_renewed) for name, cfg in renewal.items()]
