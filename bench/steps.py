"""CPU per request of each step the host must take, alone, in one thread, on this machine.

No broker, no threads, no sockets: each step of a no-op request, taken with the library
or the host code that takes it in ``opsagent run``, timed over many repetitions.  The
sum is the least CPU a host doing these steps with these libraries spends per request
before any thread hand-off or system call; bench/throughput.py sets it beside the budget
the throughput target leaves the host.

    .venv/bin/python bench/steps.py
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from loguru import logger
from opsagent.capability import Capability
from opsagent.host import envelope, events
from opsagent.host.journal import Journal
from opsagent.outcome import Outcome
from opsagent.reporting import logs
from opsagent.schema import structure
from opsagent.transport.stomp import encode_frame
from stomp.utils import parse_frame

#: A request of the throughput benchmark as ActiveMQ 5.17 delivers it, as stomp.py's
#: receiver hands it to its parser (split off at the NUL).
BODY = b'{"msg_type": "test_noop", "namespace": "prodops", "request_id": "r1234"}'
FRAME = (
    b"MESSAGE\ncontent-length:%d\nexpires:0\ndestination:/queue/test.3f2a9c1b7d4e\n"
    b"subscription:ops\npriority:4\nack:ID\\cvm-40123-1764470000000-6\\c1\\c1\\c1\\c1234\n"
    b"message-id:ID\\cvm-40123-1764470000000-3\\c1\\c1\\c1\\c1234\n"
    b"persistent:true\ntimestamp:1764470000123\n\n%s"
) % (len(BODY), BODY)
REPEAT = 20000


@attrs.frozen
class NoopInput:
    seconds: float = 0.0


def _noop(inp: NoopInput, job: Any) -> Outcome:
    return Outcome.ok()


CAP = Capability(msg_type="test_noop", input=NoopInput, doer=_noop, isolation="thread",
                 events={"ok": "test_noop_done", "error": "test_noop_failed"})


def per_call_us(step: Callable[[int], object], n: int = REPEAT) -> float:
    """Median over 5 runs of the CPU microseconds one ``step(i)`` takes."""
    runs = []
    for _ in range(5):
        t0 = time.process_time()
        for i in range(n):
            step(i)
        runs.append((time.process_time() - t0) / n * 1e6)
    return round(sorted(runs)[2], 2)


def run(repeat: int = REPEAT) -> dict[str, Any]:
    body = json.loads(BODY)
    raw = parse_frame(FRAME).body
    assert raw == BODY

    def envelope_and_input(i: int) -> object:
        env = envelope.parse(raw)
        return structure(env.body, CAP.input)

    sink = logs.BackgroundSink(io.StringIO())
    logger.remove()
    logger.add(sink, level="INFO", diagnose=False, backtrace=False, format=logs.FORMAT)

    def two_lines(i: int) -> None:
        logger.bind(job_id="r1", msg_type="test_noop", capability="x").info(
            "job {} started ({} attempt {}{})", "r1", "test_noop", 1, "")
        logger.bind(job_id="r1", msg_type="test_noop", capability="x", outcome="ok",
                    duration=0.0).info("job {} ended ok in {:.3f} s", "r1", 0.0)

    def event_and_frames(i: int) -> bytes:
        ev = events.encode(events.job_event(CAP, Outcome.ok(), {}, job_id=f"r{i}",
                                            sender="opsagent@vm", namespace="prodops"))
        return (encode_frame("SEND", {"destination": "/topic/epictopic",
                                      "content-type": "application/json"}, ev)
                + encode_frame("ACK", {"id": "ID:vm-40123-1764470000000-6:1:1:1:1234"}))

    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite")
        counter = [0]

        def journal_step(i: int) -> None:
            # One acceptance and one end per request, committed 100 at a time as the
            # completion thread does under load.
            k = counter[0]
            counter[0] += 1
            job_id = f"j{k}"
            journal.accept(job_id, "test_noop", None, body)
            if k % 100 == 99:
                journal.finish_many([(f"j{j}", Outcome.ok(), True)
                                     for j in range(k - 99, k + 1)])

        steps = {
            "stomp.py parses the MESSAGE frame": per_call_us(lambda i: parse_frame(FRAME), repeat),
            "envelope (JSON) and input (cattrs)": per_call_us(envelope_and_input, repeat),
            "journal: accepted and finished (SQLite, 100 per commit)":
                per_call_us(journal_step, max(100, repeat // 4)),
            "two job log lines (loguru)": per_call_us(two_lines, repeat),
            "event JSON, SEND and ACK frames": per_call_us(event_and_frames, repeat),
        }
        journal.close()
    sink.close()
    return {"steps_us": steps, "sum_us": round(sum(steps.values()), 1)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
