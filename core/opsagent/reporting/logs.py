"""Logging with loguru: one line per job start and end, never blocking the message path.

Records are formatted by loguru in the calling thread and handed to a writer thread
through an in-process queue, so a slow terminal or journald never blocks the receiver
or a worker (loguru's own ``enqueue=True`` pickles every record through a pipe, which
costs more than the rest of a no-op job).  ``diagnose`` is off so tracebacks never print
local variables, which may hold secrets.  ``--log-json`` writes one JSON object per line.

Every record passes one patcher, :func:`patch`, wherever it was logged from: secrets
are scrubbed (:mod:`opsagent.credentials.redaction`), then each record is made one line.  Message
values come from callers (a request's ``reason``, an input echoed in an error), so a
newline in one could forge a record (``... job 77 ended ok``) and an ESC sequence could
rewrite the terminal: control characters in the message and string extras are escaped
(``\\n``, ``\\x1b``; see :func:`one_line`).  A traceback is formatted by loguru, apart
from the message, and stays multi-line; the exception's own message is the caller's
part, so when it holds control characters the traceback is shown as text after the
message with that part escaped.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any, TextIO

from loguru import logger

from opsagent.credentials.redaction import Redactor

FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}"
MAX_PENDING = 100_000


class BackgroundSink:
    """A loguru sink that writes from its own thread; drops (and counts) when far behind."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.pending: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.dropped = 0
        self._thread = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def __call__(self, message: str) -> None:
        if self.pending.qsize() >= MAX_PENDING:
            self.dropped += 1
            return
        self.pending.put(str(message))

    def _write(self) -> None:
        while True:
            text = self.pending.get()
            if text is None:
                break
            batch = [text]
            while True:
                try:
                    more = self.pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._flush(batch)
                    return
                batch.append(more)
            self._flush(batch)

    def _flush(self, batch: list[str]) -> None:
        try:
            self.stream.write("".join(batch))
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self._thread.is_alive():
            self.pending.put(None)
            self._thread.join(5)


def _escape(code: int) -> str:
    named = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
    if code in named:
        return named[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


#: What :func:`one_line` escapes: the C0 controls (newline, CR, tab, ESC...), DEL, the C1
#: controls (NEL, CSI...), the Unicode line and paragraph separators, and the
#: bidirectional embeddings, overrides and isolates (which reorder what a reader sees).
UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_ESCAPES = {code: _escape(code) for code in UNSAFE}


def one_line(text: str) -> str:
    """``text`` with every character of :data:`UNSAFE` written as its Python escape."""
    # isprintable() is false for all of them (and for a few harmless ones, such as a
    # no-break space, which translate() then leaves alone): one C loop for clean text.
    if text.isprintable():
        return text
    return text.translate(_ESCAPES)


_redactor = Redactor()


def patch(record: Any) -> None:
    """The loguru patcher of this process: scrub secrets, then make the record one line."""
    scrub = _redactor.scrub
    message = scrub(record["message"])
    if not message.isprintable():
        message = message.translate(_ESCAPES)
    record["message"] = message
    extra = record["extra"]
    for key, value in extra.items():
        if isinstance(value, str):
            value = scrub(value)
            if not value.isprintable():
                value = value.translate(_ESCAPES)
            extra[key] = value
    exc = record["exception"]
    if exc is not None and exc.value is not None:
        _traceback(record, exc, _redactor)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def _traceback(record: Any, exc: Any, redactor: Redactor) -> None:
    text = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    shown = text
    for e in _chain(exc.value):
        own = "".join(traceback.format_exception_only(type(e), e)).rstrip("\n")
        if not own.isprintable():
            shown = shown.replace(own, one_line(own))
    shown = redactor.scrub(shown)
    if shown != text:
        # The exception object itself cannot be changed safely: show its traceback as
        # text instead.
        record["message"] += "\n" + shown.rstrip()
        record["exception"] = None


def redact_with(redactor: Redactor) -> None:
    """Scrub every record of this process with ``redactor`` from now on."""
    global _redactor
    _redactor = redactor
    logger.configure(patcher=patch)


_sink: BackgroundSink | None = None


def setup(*, json_lines: bool = False, level: str = "INFO") -> None:
    global _sink
    logger.remove()
    logger.configure(patcher=patch)
    if _sink is None:
        _sink = BackgroundSink(sys.stderr)
    if json_lines:
        logger.add(_sink, level=level, serialize=True, diagnose=False, backtrace=False)
    else:
        logger.add(_sink, level=level, diagnose=False, backtrace=False, format=FORMAT)


def flush() -> None:
    """Write out everything logged so far (before exiting)."""
    if _sink is not None:
        _sink.close()
