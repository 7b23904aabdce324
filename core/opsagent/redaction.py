"""Redaction: secret values never leave the host in a log line, an event or a reply.

Doers put credentials into requests, and requests fail in ways that echo them: a 401
whose body repeats the ``Authorization`` header, a URL with a password in an exception,
a traceback.  The host knows every secret it handed out, so it scrubs them from each job
outcome before it is journaled and published, and from every log record (message and
traceback) before a sink formats it.

What counts as a secret: each configured credential's whole value, each line of it and
each long string inside a JSON document of it (a token file's ``id_token`` and
``refresh_token``), plus their percent-encoded forms (a password inside a URL).

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
import traceback
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import quote

from opsagent.outcome import Outcome

MASK = "[redacted]"
#: A whole value shorter than this is not scrubbed: it would mangle ordinary words.
MIN_VALUE = 6
#: Pieces of a value (lines, JSON strings) shorter than this are not scrubbed either.
MIN_PIECE = 16


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
    """Knows the secrets; scrubs text, data, outcomes and log records."""

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
        return self._pattern is not None

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def scrub_data(self, data: Any) -> Any:
        """``data`` with every string in it scrubbed (the same object when nothing changed)."""
        if self._pattern is None:
            return data
        if isinstance(data, str):
            return self.scrub(data)
        if isinstance(data, dict):
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
        if self._pattern is None:
            return outcome
        reason = self.scrub(outcome.reason) if outcome.reason else outcome.reason
        data = self.scrub_data(outcome.data)
        if reason is outcome.reason and data is outcome.data:
            return outcome
        return Outcome(outcome.status, reason, data)

    def patch(self, record: Any) -> None:
        """A loguru patcher: scrub the message, string extras and any traceback."""
        pattern = self._pattern
        if pattern is None:
            return
        record["message"] = pattern.sub(MASK, record["message"])
        extra = record["extra"]
        for key, value in extra.items():
            if isinstance(value, str):
                extra[key] = pattern.sub(MASK, value)
        exc = record["exception"]
        if exc is not None and exc.value is not None:
            text = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
            if pattern.search(text):
                # The exception object itself cannot be scrubbed safely: show its
                # traceback as text instead.
                record["message"] += "\n" + pattern.sub(MASK, text).rstrip()
                record["exception"] = None

    def install(self) -> None:
        """Scrub every loguru record of this process from now on."""
        from loguru import logger

        logger.configure(patcher=self.patch)


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
