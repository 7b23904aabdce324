"""Redaction: secret values never leave the host in a log line, an event or a reply.

Doers put credentials into requests, and requests fail in ways that echo them: a 401
whose body repeats the ``Authorization`` header, a URL with a password in an exception,
a traceback.  The host knows every secret it handed out, so it scrubs them from each job
outcome before it is journaled and published, and from every log record (message and
traceback) before a sink formats it.

What counts as a secret: each configured credential's whole value, each line of it and
each long string inside a JSON document of it (a token file's ``id_token`` and
``refresh_token``), plus their percent-encoded forms (a password inside a URL); and the
value of every capability config field declared with :func:`secret`.  Secrets nobody
told the host about are caught by their shape (:func:`scrub_shapes`): the password of
``scheme://user:password@host``, the credentials of an ``Authorization:`` header, a
``Bearer`` token, and the value of a query parameter named in :data:`SECRET_PARAMETERS`.

The daemon also scrubs what Python code in its own process prints (a ``thread`` doer's
``print``).  Output of ``process`` jobs is captured and scrubbed on the way into the
log.  What a program started by a ``thread`` doer writes straight to the host's file
descriptors is beyond reach: such doers must capture their programs' output.
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import quote

import attrs

from opsagent.outcome import Outcome
from opsagent.schema import SECRET

MASK = "[redacted]"
#: A whole value shorter than this is not scrubbed: it would mangle ordinary words.
MIN_VALUE = 6
#: Pieces of a value (lines, JSON strings) shorter than this are not scrubbed either.
MIN_PIECE = 16
#: Text shorter than this holds no secret: neither a value (MIN_VALUE) nor a shape
#: (``sig=x``).
SHORTEST = 5


def declared_secrets(cls: type | None, config: Any) -> list[str]:
    """The values of ``cls``'s secret fields in ``config``: an instance, or a raw table.

    The raw ``[capability.<msg_type>]`` table is read too, so a value is known before it
    is structured and an error that quotes it is already scrubbed.  Fields holding a
    list or table contribute every string in it; nested attrs config classes are
    followed.
    """
    if cls is None or not attrs.has(cls) or config is None:
        return []
    out: list[str] = []
    for field in attrs.fields(cls):
        if isinstance(config, dict):
            value = config.get(field.name)
        else:
            value = getattr(config, field.name, None)
        if field.metadata.get(SECRET):
            out.extend(_strings(value))
        elif attrs.has(type(value)):
            out.extend(declared_secrets(type(value), value))
        elif isinstance(value, dict) and isinstance(field.type, type) and attrs.has(field.type):
            out.extend(declared_secrets(field.type, value))
    return out


#: Query parameters whose value is a credential (case does not matter): xrootd's
#: ``authz``, OAuth tokens, signed-URL signatures (S3, GCS, Azure SAS, CloudFront) and
#: the usual password and key names.
SECRET_PARAMETERS = (
    "authz",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "token",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
)
#: Schemes of an ``Authorization`` header, kept in front of the masked credentials.
AUTH_SCHEMES = ("basic", "bearer", "digest", "negotiate", "ntlm", "token", "jwt", "oauth")

# A value ends at a blank, a quote, a bracket or a separator; one already masked is left.
# The text may be a caller's: every unbounded repeat below starts at a fixed word (a
# scheme's "://", "authorization", "bearer", a parameter's name), and the runs before
# one are bounded ({0,31}), so no input makes a pattern take quadratic time.
_VALUE = rf"(?!{re.escape(MASK)})[^\s\"'<>,;)\]}}&#]+"
_USERINFO = re.compile(
    rf"\b([a-z][a-z0-9+.-]{{0,31}}://[^\s/?#@:\"'<>]*):(?!{re.escape(MASK)}@)[^\s/?#\"'<>]+@",
    re.I,
)
# The scheme is taken possessively (?+): "Bearer [redacted]" is left, not read as a
# credential "Bearer" with no scheme.
_AUTH_HEADER = re.compile(
    r"\b((?:proxy-)?authorization|x-[\w-]{0,31}auth-token)([\"']?\s*[:=]\s*[\"']?)"
    rf"((?:(?:{'|'.join(AUTH_SCHEMES)})\s+)?+){_VALUE}",
    re.I,
)
_BEARER = re.compile(r"\b(bearer(?:\s+|%20|\+))([\w.~+/-]+=*)", re.I)
_PARAMETER = re.compile(
    rf"(?<![\w.-])((?:{'|'.join(re.escape(p) for p in SECRET_PARAMETERS)})=){_VALUE}", re.I
)


def _bearer(match: re.Match[str]) -> str:
    token = match.group(2)
    # "bearer token", "Bearer authentication": words, not tokens.  A token has a digit
    # or a symbol in it, or is long.
    if token.isalpha() and len(token) < 20:
        return match.group(0)
    return match.group(1) + MASK


def scrub_shapes(text: str) -> str:
    """``text`` with secrets masked by their shape, whatever their value.

    ``scheme://user:pass@host`` keeps the user; ``Authorization: <scheme> <value>`` (and
    ``Proxy-Authorization``, ``X-...-Auth-Token``) keeps the header and scheme; a
    ``Bearer`` token anywhere; ``name=value`` for a name in :data:`SECRET_PARAMETERS`.
    Plain substring tests come first: text with none of the shapes costs next to nothing.
    """
    if "://" in text and "@" in text:
        text = _USERINFO.sub(rf"\1:{MASK}@", text)
    if ":" in text or "=" in text:
        if "uth" in text or "UTH" in text:
            text = _AUTH_HEADER.sub(rf"\1\2\3{MASK}", text)
        if "=" in text:
            text = _PARAMETER.sub(rf"\1{MASK}", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(_bearer, text)
    return text


def pieces(secret: str) -> set[str]:
    """The strings to scrub for one secret value."""
    out: set[str] = set()
    whole = secret.strip()
    if len(whole) >= MIN_VALUE:
        out.add(whole)
    for line in whole.splitlines():
        line = line.strip()
        if len(line) >= MIN_PIECE and not line.startswith("-----"):
            out.add(line)
    if whole.startswith(("{", "[")):
        try:
            doc = json.loads(whole)
        except ValueError:
            doc = None
        out.update(s for s in _strings(doc) if len(s) >= MIN_PIECE)
    for text in list(out):
        encoded = quote(text, safe="")
        if encoded != text:
            out.add(encoded)
    return out


def _strings(doc: Any) -> Iterable[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for value in doc.values():
            yield from _strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value)


class Redactor:
    """Knows the secrets; scrubs text, data, outcomes and log records.

    Known values are masked wherever they appear; :func:`scrub_shapes` then masks the
    secrets nobody declared.  Either way what is left is the same object when nothing
    changed, so scrubbing a clean outcome costs a few substring tests.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._pieces: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.learn(*secrets)

    def learn(self, *secrets: str | None) -> None:
        """Add secret values (duplicates and empty ones are ignored)."""
        new: set[str] = set()
        for secret in secrets:
            if secret:
                new |= pieces(secret)
        with self._lock:
            if new <= self._pieces:
                return
            self._pieces |= new
            # Longest first, so a whole value is masked before a line of it.
            ordered = sorted(self._pieces, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(p) for p in ordered))

    @property
    def active(self) -> bool:
        """Whether any secret value is known (shapes are scrubbed regardless)."""
        return self._pattern is not None

    def scrub(self, text: str) -> str:
        if len(text) < SHORTEST:
            return text
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        # The log path calls this for each string of each record: the shapes' cheapest
        # tests here spare most strings even the call.
        if ":" in text or "=" in text or "earer" in text or "EARER" in text:
            return scrub_shapes(text)
        return text

    def scrub_data(self, data: Any) -> Any:
        """``data`` with every string in it scrubbed (the same object when nothing changed)."""
        if isinstance(data, str):
            return self.scrub(data)
        if isinstance(data, dict):
            if not data:
                return data
            out = {k: self.scrub_data(v) for k, v in data.items()}
            return data if all(out[k] is data[k] for k in data) else out
        if isinstance(data, list | tuple):
            items = [self.scrub_data(v) for v in data]
            if all(a is b for a, b in zip(items, data, strict=True)):
                return data
            return type(data)(items)
        return data

    def outcome(self, outcome: Outcome) -> Outcome:
        """The outcome with secrets scrubbed from its reason and data."""
        reason = self.scrub(outcome.reason) if outcome.reason else outcome.reason
        data = self.scrub_data(outcome.data)
        items = tuple(self.outcome(item) for item in outcome.items)
        notices = tuple(
            attrs.evolve(n, title=self.scrub(n.title), detail=self.scrub(n.detail))
            for n in outcome.notices
        )
        if (
            reason == outcome.reason
            and data is outcome.data
            and all(a is b for a, b in zip(items, outcome.items, strict=True))
            and notices == outcome.notices
        ):
            return outcome
        return Outcome(outcome.status, reason, data, items, notices)

    def install(self) -> None:
        """Scrub every loguru record of this process from now on."""
        from opsagent.reporting import logs

        logs.redact_with(self)


class ScrubbedStream(io.TextIOBase):
    """A text stream that scrubs what is written before passing it on."""

    def __init__(self, stream: TextIO, redactor: Redactor) -> None:
        self.stream = stream
        self.redactor = redactor

    def write(self, text: str) -> int:
        self.stream.write(self.redactor.scrub(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def scrub_stdio(redactor: Redactor) -> None:
    """Route this process's ``sys.stdout`` and ``sys.stderr`` through ``redactor``."""
    if not isinstance(sys.stdout, ScrubbedStream):
        sys.stdout = ScrubbedStream(sys.stdout, redactor)
    if not isinstance(sys.stderr, ScrubbedStream):
        sys.stderr = ScrubbedStream(sys.stderr, redactor)
