"""run(on_line=...): each line of a program's output, as it comes, in the caller's thread."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
from opsagent import run

PRINTS = (
    "import time\nfor i in range(3):\n    print(f'line {i}', flush=True)\n    time.sleep(0.2)\n"
)


def test_each_line_is_handed_over_as_it_comes_in_the_calling_thread() -> None:
    seen: list[tuple[str, float, bool]] = []
    started = time.monotonic()
    done = run(
        [sys.executable, "-c", PRINTS],
        timeout=10,
        on_line=lambda line: seen.append(
            (
                line,
                time.monotonic() - started,
                threading.current_thread() is threading.main_thread(),
            )
        ),
    )
    assert done.ok and done.output == "line 0\nline 1\nline 2\n"
    assert [s[0] for s in seen] == ["line 0\n", "line 1\n", "line 2\n"]
    assert all(s[2] for s in seen)
    assert seen[0][1] < done.duration - 0.2  # the first line came before the program ended


def test_a_failing_on_line_kills_the_program_and_raises() -> None:
    pids: list[int] = []

    def stop(_line: str) -> None:
        raise RuntimeError("enough")

    with pytest.raises(RuntimeError, match="enough"):
        run(
            [sys.executable, "-c", "import time\nprint('x', flush=True)\ntime.sleep(30)"],
            timeout=20,
            on_start=pids.append,
            on_line=stop,
        )
    # The group is killed as run() raises; the kernel may take a moment to reap it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pids[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)
