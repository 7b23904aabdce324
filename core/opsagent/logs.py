"""Logging with loguru: one line per job start and end, never on the message path's clock.

Records go through loguru's queue (``enqueue=True``) so a slow terminal or journald never
blocks the receiver; ``diagnose`` is off so tracebacks never print local variables
(which may hold secrets).  ``--log-json`` writes one JSON object per line.
"""

from __future__ import annotations

import sys

from loguru import logger

FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}{extra[job_id]: >0}"


def setup(*, json_lines: bool = False, level: str = "INFO") -> None:
    logger.remove()
    logger.configure(extra={"job_id": ""})
    if json_lines:
        logger.add(
            sys.stderr, level=level, serialize=True, enqueue=True, diagnose=False, backtrace=False
        )
    else:
        logger.add(
            sys.stderr,
            level=level,
            enqueue=True,
            diagnose=False,
            backtrace=False,
            format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}",
        )
