"""PanDA task commands through panda-client's Python API, in a bounded process.

panda-client's HTTP client waits up to 600 s for an answer and refreshes (rewrites) the
token file it reads, so the calls are made by a small Python program run with
``panda_sys``'s interpreter (``python -c``, never a shell) in a private directory holding
a copy of the operator's token: at the job's deadline it is killed with everything it
started, and whatever it does to its token copy stays private.  It reads its request as
JSON on standard input -- task ids as integers, ``new_parameters`` as a JSON object,
nothing on a command line -- and writes one line per event (:data:`MARK` then JSON):

- ``{"kind": "sending", "key"}`` before each command (a job killed after it cannot
  know whether PanDA received the command, and never sends it again);
- ``{"kind": "sent", "key", "status", "output"}`` after each command, where ``status``
  and ``output`` are panda-client's return pair (0 and the server's answer, or a
  transport status and its text);
- ``{"kind": "read", "key", "status", "output"}`` for each status read-back
  (``Client.getTaskStatus``) of a pause or resume, until the wanted status shows or
  ``verify_seconds`` pass (with ``commands`` false, only these: a job cut short asks
  PanDA what its commands did);
- ``{"kind": "end"}``.

Commands are paced: one starts no sooner than ``interval`` seconds after the previous
one was answered, so PanDA never sees two closer than that (it rate-limits task
commands).  :func:`judge_sent` and
:func:`judge_status` read the answers, which come from the server and are treated as
hostile: anything of an unexpected shape is a failure with the shape named.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

#: Printed before each answer, so that anything panda-client prints is told apart.
MARK = "OPSAGENT-PANDA-OP "

#: The panda-client call of each operation.
CALLS = {
    "pause": "pauseTask",
    "resume": "resumeTask",
    "retry_failures": "retryTask",
    "increase_attempts": "increase_attempt_nr",
}
#: Operations whose effect is read back.
STATE_CHANGES = frozenset({"pause", "resume"})

#: First lines of every program this package runs with panda-client: it dies with the
#: job that started it (``PR_SET_PDEATHSIG``), even when the job is SIGKILLed -- it runs
#: in a session of its own, which a kill of the job's process group does not reach.
#: ``sys.argv[1]`` is the job's pid (the program ends at once if it is already gone).
PRELUDE = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
"""

RUNNER = (
    PRELUDE
    + f"""
import json, sys, time
from pandaclient import Client

MARK = {MARK!r}
req = json.load(sys.stdin)
op = req["operation"]


def say(**fields):
    print(MARK + json.dumps(fields, default=str), flush=True)


def call(item):
    tid = int(item["task_id"])
    if op == "pause":
        return Client.pauseTask(tid, verbose=False)
    if op == "resume":
        return Client.resumeTask(tid, verbose=False)
    if op == "retry_failures":
        return Client.retryTask(tid, newParams=item.get("new_parameters") or None)
    if op == "increase_attempts":
        return Client.increase_attempt_nr(tid, int(item["increase"]))
    raise ValueError("unknown operation")


answered = None
sent = [] if req["commands"] else list(req["items"])
for item in req["items"] if req["commands"] else []:
    if answered is not None:
        time.sleep(max(0.0, answered + req["interval"] - time.monotonic()))
    say(kind="sending", key=item["key"])
    try:
        status, output = call(item)
    except Exception as exc:
        status, output = -1, type(exc).__name__ + ": " + str(exc)
    answered = time.monotonic()
    say(kind="sent", key=item["key"], status=status, output=output)
    if status != -1:
        sent.append(item)

if op in ("pause", "resume") and sent:
    deadline = time.monotonic() + req["verify_seconds"]
    pending = list(sent)
    while pending:
        for item in list(pending):
            try:
                status, output = Client.getTaskStatus(int(item["task_id"]))
            except Exception as exc:
                status, output = -1, type(exc).__name__ + ": " + str(exc)
            say(kind="read", key=item["key"], status=status, output=output)
            if status == 0 and output in req["wanted"]:
                pending.remove(item)
        if not pending or time.monotonic() + req["verify_every"] > deadline:
            break
        time.sleep(req["verify_every"])
say(kind="end")
"""
)

#: The statuses that confirm a command took effect.
WANTED = {"pause": ["paused"], "resume": ["running", "ready", "scouting", "pending", "registered"]}

_TEXT = 300


def _short(value: Any) -> str:
    """The server's text for a reason: one line, printable, bounded."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    text = " ".join(text.split())
    return text[:_TEXT] + ("..." if len(text) > _TEXT else "")


@attrs.frozen
class Sent:
    """How PanDA answered one command: ``accepted``, and what it said."""

    accepted: bool
    diagnostic: str


def judge_sent(operation: str, status: Any, output: Any) -> Sent:
    """Read panda-client's return pair for one command."""
    if status != 0:
        if status == -1:
            return Sent(False, f"panda-client failed: {_short(output)}")
        if output is None:
            # panda-client's status 255 without text: the connection failed, or the answer
            # was not the server's JSON (a proxy's error page); panda-client keeps no more.
            return Sent(
                False,
                f"PanDA could not be reached or gave no readable answer "
                f"(panda-client status {status})",
            )
        return Sent(False, f"PanDA could not be reached (status {status}): {_short(output)}")
    if operation == "retry_failures":
        # retryTask: (0, (return code, message)); 0 registered.
        if isinstance(output, list) and len(output) == 2:
            code, message = output
            if code == 0 and not isinstance(code, bool):
                return Sent(True, _short(message) or "retry registered")
            return Sent(False, f"PanDA refused the retry (code {_short(code)}): {_short(message)}")
        return Sent(False, f"PanDA's answer has an unexpected shape: {_short(output)}")
    # pauseTask/resumeTask/increase_attempt_nr: (0, (success, data or message)).
    if isinstance(output, list) and len(output) == 2 and isinstance(output[0], bool):
        success, detail = output
        if success:
            return Sent(True, _short(detail) if detail not in (None, "", 0) else "registered")
        return Sent(False, f"PanDA refused {operation}: {_short(detail)}")
    return Sent(False, f"PanDA's answer has an unexpected shape: {_short(output)}")


def judge_status(status: Any, output: Any) -> tuple[str | None, str]:
    """The task status a read-back shows (``None`` when it failed) and a diagnostic."""
    if status != 0:
        return None, f"status read-back failed (status {status}): {_short(output)}"
    if isinstance(output, str) and output and len(output) <= 64 and output.isprintable():
        return output, f"PanDA reports status {output}"
    return None, f"status read-back gave no status: {_short(output)}"


def parse(line: str) -> dict[str, Any] | None:
    """One answer line of the runner, or ``None`` for anything else it printed."""
    if not line.startswith(MARK):
        return None
    try:
        answer = json.loads(line[len(MARK) :])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) and isinstance(answer.get("kind"), str) else None
