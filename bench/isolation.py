"""Overhead of process isolation per job (p50): a no-op in a child vs the same no-op in a thread."""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import HostProcess, RoundTrip, broker, pct

N = 60


def run() -> dict[str, float]:
    env = broker()
    with tempfile.TemporaryDirectory() as tmp:
        host = HostProcess(Path(tmp), env).start()
        rt = RoundTrip(env)
        try:
            base = {"namespace": "prodops"}
            rt.measure(host.queue, {**base, "msg_type": "test_noop"}, 5)
            rt.measure(host.queue, {**base, "msg_type": "test_noop_process"}, 3)
            thread = rt.measure(host.queue, {**base, "msg_type": "test_noop"}, N)
            process = rt.measure(host.queue, {**base, "msg_type": "test_noop_process"}, N)
        finally:
            rt.close()
            host.stop()
    return {"thread_job_p50_ms": round(pct(thread, 50) * 1000, 2),
            "process_job_p50_ms": round(pct(process, 50) * 1000, 2),
            "process_overhead_p50_ms": round((pct(process, 50) - pct(thread, 50)) * 1000, 2)}


if __name__ == "__main__":
    print(run())
