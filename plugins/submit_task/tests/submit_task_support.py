"""Helpers of the submit_task tests: tokens, configuration, jobs, durable notes."""

from __future__ import annotations

import base64
import json
import os
import pwd
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import opsagent_submit_task
from opsagent import Credential, Job, testing
from opsagent.testing import Notes
from opsagent_submit_task import SubmitConfig
from submit_task_fakes import FakeCatalogue, FakePanda

CAPABILITY = testing.declared(opsagent_submit_task)["submit_task"]

TASK = "group.EIC.26.06.0.epic_craterlake.p3001.e1.s1.r1"

#: What the catalogue serves: the layout of PCS's build_panda_command (parts joined by
#: backslash-newline), for a production task that prun accepts.
COMMAND = (
    "prun \\\n"
    '  --exec "./run.sh; echo done" \\\n'
    f"  --outDS {TASK} \\\n"
    "  --containerImage docker://eicweb/jug_xl:26.06.0-stable \\\n"
    "  --site BNL_PanDA_1 \\\n"
    "  --prodSourceLabel test \\\n"
    "  --vo wlcg \\\n"
    "  --nJobs 2 \\\n"
    "  --noBuild \\\n"
    "  --official\n"
)


def b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def token_file_bytes(exp_in: float = 86400.0, **claims: Any) -> tuple[bytes, str]:
    """A panda-client ``.token`` file (an OIDC token endpoint answer) and its id token."""
    payload = {
        "name": "Ops Operator",
        "preferred_username": "opsop",
        "groups": ["EIC", "EIC/production"],
        "exp": int(time.time() + exp_in),
        "sub": "0000-1111",
        **claims,
    }
    payload = {k: v for k, v in payload.items() if v is not None}
    id_token = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(payload)}.c2lnbmF0dXJl"
    doc = {
        "access_token": "acc.ess.token",
        "expires_in": 3600,
        "id_token": id_token,
        "refresh_token": "refresh-token-secret-0123456789",
        "scope": "openid profile",
        "token_type": "Bearer",
    }
    return json.dumps(doc).encode(), id_token


@attrs.define
class OperatorToken:
    path: Path
    id_token: str = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False)
    mtime_ns: int

    def rewrite(self, raw: bytes, id_token: str) -> None:
        """Install another token (a test's own set-up, before the capability runs)."""
        self.path.write_bytes(raw)
        st = self.path.stat()
        self.raw, self.id_token, self.mtime_ns = raw, id_token, st.st_mtime_ns

    def assert_untouched(self) -> None:
        assert self.path.is_file(), f"the operator's token {self.path} is gone"
        assert self.path.read_bytes() == self.raw, "the operator's token was rewritten"
        assert self.path.stat().st_mtime_ns == self.mtime_ns, "the token's mtime changed"
        assert sorted(p.name for p in self.path.parent.iterdir()) == [".token"], (
            "something was written next to the operator's token"
        )


#: A variable every program the capability starts carries (through ``panda_env``), set to
#: the fake PanDA server's URL: ``processes_with_env(prun_mark(panda))`` finds them.
PRUN_MARK = "SUBMIT_TEST_MARK"


def prun_mark(panda: FakePanda) -> str:
    return f"{PRUN_MARK}={panda.url}"


def make_config(pcs: FakeCatalogue, panda: FakePanda, **overrides: Any) -> SubmitConfig:
    values: dict[str, Any] = dict(
        monitor_url=pcs.url,
        panda_sys=sys.prefix,
        panda_env={**panda.env(), PRUN_MARK: panda.url},
        pcs_timeout=3.0,
        prun_timeout=30.0,
        kill_grace=1.0,
        record_backoff=0.05,
    )
    values.update(overrides)
    return SubmitConfig(**values)


def private_dirs(pid: int | None = None) -> list[Path]:
    """The private directories (``opsagent.private``) that process ``pid`` (default: any)
    made and that still exist, in the bases a job here would use."""
    bases = [Path(os.environ["XDG_RUNTIME_DIR"])] if os.environ.get("XDG_RUNTIME_DIR") else []
    bases.append(Path("/dev/shm"))
    pattern = f"opsagent-{pid}-*" if pid is not None else "opsagent-*"
    return sorted(p for base in bases if base.is_dir() for p in base.glob(pattern))


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(
        item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item
    )


class SqliteNotes:
    """Durable job notes in SQLite, as the host's journal keeps them (survive SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS notes (job TEXT, key TEXT, value TEXT, "
                "PRIMARY KEY (job, key))"
            )

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def put_note(self, job_id: str, key: str, value: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO notes VALUES (?, ?, ?)", (job_id, key, value))

    def get_note(self, job_id: str, key: str) -> str | None:
        with self._db() as db:
            row = db.execute(
                "SELECT value FROM notes WHERE job = ? AND key = ?", (job_id, key)
            ).fetchone()
        return row[0] if row else None


def job_env(**extra: str) -> dict[str, str]:
    """An allow-listed job environment like the host builds."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ}
    env.update(extra)
    return env


def make_job(
    cache: Path,
    token: Path | None,
    config: SubmitConfig,
    *,
    notes: Notes | None = None,
    job_id: str = "job-0001",
    time_limit: float = 300.0,
    pcs_token: str | None = None,
    env: dict[str, str] | None = None,
) -> Job:
    """A job as the host builds it (``opsagent.testing.make_job``): by default the host's
    allow-listed environment with the credentials handed over in it."""
    creds: dict[str, Credential] = {}
    if token is not None:
        creds["panda_oidc_token"] = Credential("panda_oidc_token", path=token)
    if pcs_token is not None:
        creds["pcs_token"] = Credential("pcs_token", value=pcs_token)
    return testing.make_job(
        CAPABILITY,
        cache_dir=cache,
        config=config,
        credentials=creds,
        env=env,
        notes=notes,
        job_id=job_id,
        time_limit=time_limit,
    )


# -- jobs as real processes, as the host runs them (process isolation) -----------------


def config_table(pcs: FakeCatalogue, panda: FakePanda, **overrides: Any) -> dict[str, Any]:
    """``[capability.submit_task]`` as the host hands it to a job process."""
    return {
        "monitor_url": pcs.url,
        "panda_sys": sys.prefix,
        "panda_env": {**panda.env(), PRUN_MARK: panda.url},
        "pcs_timeout": 3.0,
        "prun_timeout": 30.0,
        "kill_grace": 1.0,
        "record_backoff": 0.05,
        **overrides,
    }


def start_job_process(
    tmp_path: Path,
    table: dict[str, Any],
    token: Path,
    *,
    job_id: str = "req-7",
    attempt: int = 1,
    interrupted: bool = False,
    owner: str | None = "alice",
) -> testing.JobProcess:
    """One run of a submit_task job in a process of its own, as the host runs it (process
    isolation), with a real journal for its notes under ``tmp_path / "state"``."""
    return testing.start_job_process(
        CAPABILITY,
        {"task_name": TASK, "owner": owner},
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        config=table,
        credentials={"panda_oidc_token": Credential("panda_oidc_token", path=token)},
        env=job_env(),
        job_id=job_id,
        attempt=attempt,
        interrupted=interrupted,
        time_limit=300,
    )


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


#: The operator's Unix group, the operator (who runs the host) and another member.
OPS_GROUP, OPERATOR, PEER = "opsagent-ops", "opsagent-op", "opsagent-peer"


@attrs.frozen
class UnixUsers:
    group: str
    gid: int
    operator: str
    peer: str

    def as_user(self, name: str) -> dict[str, object]:
        """``subprocess.Popen`` arguments running a process as ``name`` of the group,
        with the unit's ``UMask=0002``."""
        return {"user": name, "group": self.group, "extra_groups": [self.group], "umask": 0o002}

    def uid(self, name: str) -> int:
        return pwd.getpwnam(name).pw_uid
