"""What PanDA knows of a task name: asked before a cut-short submission is tried again.

A job killed after prun started and before PanDA's answer was noted cannot tell whether
PanDA has the task.  PanDA can: ``GET /api/v1/task/get_tasks_detailed_info_since`` with
``filters={"taskName": <name>}`` and no ``since`` lists the caller's own tasks of that
name, of any age (the server seeds its criteria with the caller's DN).  The question is
asked through panda-client's own ``Client.get_tasks_detailed_info_since``, in the
environment prun runs in (``panda_sys``'s Python, the private token copy, the site's
``panda_env``), so it authenticates exactly as the submission did.

prun names a task after its ``--outDS``, with a ``/`` appended (it always submits to an
output container): :func:`task_name_of` gives that name from the argument vector.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from opsagent import run

#: Printed before the answer, so that anything panda-client prints is told apart.
MARK = "OPSAGENT-PANDA-LOOKUP "

#: Run with ``python -c`` and the task name as its argument (never through a shell).
LOOKUP = f"""
import json, sys
from pandaclient import Client
status, data = Client.get_tasks_detailed_info_since(
    since=None, filters={{"taskName": sys.argv[1]}}, n_tasks=100
)
print({MARK!r} + json.dumps({{"status": status, "tasks": data}}, default=str), flush=True)
"""


class LookupFailed(Exception):
    """PanDA could not be asked, or its answer could not be read."""


@attrs.frozen
class Found:
    """The jediTaskIDs PanDA has under the name (none, one, or -- if duplication was
    ever allowed -- more)."""

    task_name: str
    ids: tuple[int, ...]


def task_name_of(argv: Sequence[str]) -> str | None:
    """The name prun gives the task it submits: ``--outDS`` with a trailing ``/``."""
    out: str | None = None
    for i, arg in enumerate(argv):
        if arg == "--outDS" and i + 1 < len(argv):
            out = argv[i + 1]
        elif arg.startswith("--outDS="):
            out = arg.split("=", 1)[1]
    if not out:
        return None
    return out if out.endswith("/") else out + "/"


def _parse(output: str, task_name: str) -> Found:
    for line in reversed(output.splitlines()):
        if line.startswith(MARK):
            try:
                answer = json.loads(line[len(MARK) :])
            except ValueError:
                break
            return _found(answer, task_name)
    raise LookupFailed(f"panda-client gave no answer: {_tail(output)}")


def _found(answer: Any, task_name: str) -> Found:
    status = answer.get("status") if isinstance(answer, dict) else None
    tasks = answer.get("tasks") if isinstance(answer, dict) else None
    if status != 0 or not isinstance(tasks, list):
        raise LookupFailed(f"the PanDA server did not answer the look-up (status {status})")
    ids = set()
    for task in tasks:
        # Compared here too: the server treats a '|' in a filter value as a pattern.
        if isinstance(task, dict) and task.get("taskName") == task_name:
            try:
                ids.add(int(task["jediTaskID"]))
            except (KeyError, TypeError, ValueError):
                raise LookupFailed(f"a task named {task_name} has no usable jediTaskID") from None
    return Found(task_name, tuple(sorted(ids)))


def _tail(text: str, n: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def lookup(
    task_name: str,
    *,
    python: str,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    timeout: float,
) -> Found:
    """The jediTaskIDs of the caller's PanDA tasks named ``task_name``."""
    if not os.access(python, os.X_OK):
        raise LookupFailed(f"no Python at {python} to run panda-client with")
    done = run(
        [python, "-c", LOOKUP, task_name],
        env=env,
        cwd=cwd,
        timeout=timeout,
        grace=1.0,
        output_cap=64 * 1024,
    )
    if done.timed_out:
        raise LookupFailed(f"no answer within {timeout:g} s")
    if done.returncode != 0:
        raise LookupFailed(f"panda-client failed (status {done.returncode}): {_tail(done.output)}")
    return _parse(done.output, task_name)
