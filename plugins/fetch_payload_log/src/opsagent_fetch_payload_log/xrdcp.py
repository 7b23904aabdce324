"""Copying the tarball with ``xrdcp -f --nopbar`` under its own time limit.

:func:`opsagent.run` starts xrdcp in its own session and kills the whole group at the
limit.  Being in another session, xrdcp would outlive a job process that the host kills
at the job's limit, so it is started through ``setpriv --pdeathsig KILL``: the kernel
kills it when the job process dies, however that happens.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from opsagent import run

from opsagent_fetch_payload_log.replicas import shown_pfn

OUTPUT_CAP = 16 * 1024


class CopyFailed(Exception):
    """The copy did not produce the file; the message starts with ``xrdcp``."""


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "[ERROR]" in line or "[FATAL]" in line:
            return line
    return lines[-1] if lines else "no output"


def argv(pfn: str, dest: Path, path: str | None = None) -> list[str]:
    cmd = ["xrdcp", "-f", "--nopbar", pfn, str(dest)]
    if shutil.which("setpriv", path=path):
        cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
    return cmd


def copy(
    pfn: str,
    dest: Path,
    *,
    env: Mapping[str, str],
    timeout: float,
    on_start: Callable[[int], None] | None = None,
) -> float:
    """Copy ``pfn`` to ``dest``; return the seconds it took or raise :class:`CopyFailed`."""
    if pfn.startswith("-"):
        raise CopyFailed(f"xrdcp: refusing PFN {shown_pfn(pfn)!r}")
    done = run(
        argv(pfn, dest, env.get("PATH")),
        env=env,
        cwd=dest.parent,
        timeout=timeout,
        grace=1.0,
        output_cap=OUTPUT_CAP,
        on_start=on_start,
    )
    if done.timed_out:
        raise CopyFailed(
            f"xrdcp: no complete copy of {shown_pfn(pfn)} within {timeout:g} s (xrdcp_timeout); "
            f"killed"
        )
    if done.returncode != 0:
        how = (
            f"rc={done.returncode}"
            if done.returncode > 0
            else f"killed by signal {-done.returncode}"
        )
        raise CopyFailed(f"xrdcp {how}: {_last_error(done.output)} ({shown_pfn(pfn)})")
    if not dest.is_file():
        raise CopyFailed(f"xrdcp: exited 0 but wrote no file from {shown_pfn(pfn)}")
    return done.duration
