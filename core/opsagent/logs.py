"""Logging with loguru: one line per job start and end, never blocking the message path.

Records are formatted by loguru in the calling thread and handed to a writer thread
through an in-process queue, so a slow terminal or journald never blocks the receiver
or a worker (loguru's own ``enqueue=True`` pickles every record through a pipe, which
costs more than the rest of a no-op job).  ``diagnose`` is off so tracebacks never print
local variables, which may hold secrets.  ``--log-json`` writes one JSON object per line.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
from typing import TextIO

from loguru import logger

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


_sink: BackgroundSink | None = None


def setup(*, json_lines: bool = False, level: str = "INFO") -> None:
    global _sink
    logger.remove()
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
