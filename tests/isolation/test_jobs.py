"""One job factory (opsagent.isolation.jobs): a capability sees the same job from the host
on the real broker, from ``opsagent do`` and from the testing kit -- its config section,
its time limit with the host's override, its credentials, its cache and an environment of
the allow-list, the credentials, SWF_TMP_DIR and the process mark -- and ``opsagent do``
keeps the time limit and reports a bad configuration in one line."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opsagent import Credential
from opsagent.testing import Harness, declared, make_job, processes_with_env
from support import OPSAGENT

SITEJOB = Path(__file__).parent / "sitejob"
sys.path.insert(0, str(SITEJOB))
opsagent_testjob = importlib.import_module("opsagent_testjob")

SEEN = ("test_seen", "test_seen_thread")


def section(msg_type: str, credential: Path, **keys: Any) -> dict[str, dict[str, Any]]:
    """The configuration the three runs share: a config key, a time limit override and
    the credential's source."""
    return {
        f"capability.{msg_type}": {"label": "three-ways", "tries": 3, "time_limit": 7, **keys},
        "credentials.seencred": {"file": str(credential)},
    }


@pytest.fixture
def credential(tmp_path: Path) -> Path:
    path = tmp_path / "seencred"
    path.write_text("seen-secret")
    path.chmod(0o600)
    return path


def normalized(event: dict[str, Any], cache: Path, state: Path) -> dict[str, Any]:
    """What the job saw, with this run's own cache and state directories named alike."""
    seen = {k: event[k] for k in ("env", "swf_tmp_dir", "mark", "cache_dir", "time_limit",
                                  "config", "credentials", "cred_sha256")}
    for key, value, name in (("swf_tmp_dir", cache, "<cache>"), ("cache_dir", cache, "<cache>"),
                             ("mark", state.resolve(), "<state>")):
        assert seen[key] == str(value), (key, seen[key], value)
        seen[key] = name
    return seen


@pytest.mark.parametrize("msg_type", SEEN)
def test_a_capability_sees_the_same_job_from_the_host_opsagent_do_and_the_testing_kit(
    msg_type, host_factory, caller_for, credential, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(SITEJOB))  # the host's and `do`'s environment
    config = section(msg_type, credential)
    host = host_factory(paths=(SITEJOB,), extra=config).start()
    caller = caller_for(host)
    from_host = caller.wait_event(caller.send(msg_type, {}))
    assert from_host["outcome"] == "ok", from_host

    done = subprocess.run([*OPSAGENT, "--config", str(host.config), "do", msg_type],
                          env=host.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    from_do = json.loads(done.stdout)

    kit = Harness(tmp=tmp_path / "kit", modules=[opsagent_testjob], config=config)
    try:
        from_kit = kit.send(msg_type, {})
    finally:
        kit.stop()

    host_dirs = (host.tmp / "cache", host.tmp / "state")
    kit_dirs = (tmp_path / "kit" / "cache", tmp_path / "kit" / "state")
    seen = normalized(from_host, *host_dirs)
    assert normalized(from_do, *host_dirs) == seen
    assert normalized(from_kit, *kit_dirs) == seen
    assert seen["time_limit"] == 7  # the override, not the declared 30
    assert seen["config"] == {"label": "three-ways", "tries": 3}
    assert seen["credentials"] == ["seencred"]
    names = {"SWF_TMP_DIR", "OPSAGENT_STATE_DIR", "OPSAGENT_CREDENTIAL_SEENCRED", "PATH"}
    assert names <= set(seen["env"])
    # A job process also carries its own job id; a thread job shares the host's process.
    assert ("OPSAGENT_JOB_ID" in seen["env"]) == (msg_type == "test_seen")

    # make_job: the same job, but a test's own has no host state directory to mark.
    cap = declared(opsagent_testjob)[msg_type]
    job = make_job(cap, cache_dir=host_dirs[0], config={"label": "three-ways", "tries": 3},
                   credentials={"seencred": Credential("seencred", path=credential)},
                   time_limit=7)
    made = {"env": sorted(job.env), "config": {"label": job.config.label,
                                               "tries": job.config.tries},
            "time_limit": job.time_limit, "credentials": sorted(job.credentials)}
    assert made == {"env": sorted(set(seen["env"]) - {"OPSAGENT_STATE_DIR", "OPSAGENT_JOB_ID"}),
                    "config": seen["config"], "time_limit": 7, "credentials": ["seencred"]}


def do(config: Path, msg_type: str, inp: dict[str, Any], env: dict[str, str]
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OPSAGENT, "--config", str(config), "do", msg_type, "--json",
                           json.dumps(inp)], env=env, capture_output=True, text=True, timeout=60)


def write_config(tmp_path: Path, extra: dict[str, dict[str, Any]]) -> tuple[Path, dict[str, str]]:
    from opsagent.testing import toml_text

    raw = {"host": {"cache_dir": str(tmp_path / "cache"), "state_dir": str(tmp_path / "state"),
                    "kill_grace_seconds": 1}, **extra}
    path = tmp_path / "opsagent.toml"
    path.write_text(toml_text(raw))
    return path, {**os.environ, "PYTHONPATH": str(SITEJOB)}


@pytest.mark.parametrize("msg_type", SEEN)
def test_opsagent_do_ends_a_job_over_its_configured_time_limit_as_timeout(
    msg_type, tmp_path, credential
) -> None:
    config, env = write_config(tmp_path, section(msg_type, credential, time_limit=1))
    done = do(config, msg_type, {"seconds": 20, "grandchild": msg_type == "test_seen"}, env)
    assert done.returncode == 3, done.stdout + done.stderr
    event = json.loads(done.stdout)
    assert (event["msg_type"], event["outcome"]) == ("test_seen_failed", "timeout")
    assert f"{msg_type} did not finish within its time limit of 1 s" in event["reason"]
    if msg_type == "test_seen":
        # The job's process group went with it: nothing carries its cache in its environment.
        assert processes_with_env(str(tmp_path / "cache")) == []


def test_opsagent_do_reports_an_unknown_config_key_in_one_line_with_status_78(
    tmp_path, credential
) -> None:
    config, env = write_config(tmp_path, section("test_seen", credential, labl="x"))
    done = do(config, "test_seen", {}, env)
    assert done.returncode == 78
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "[capability.test_seen] unknown key(s) ['labl']" in lines[0]
    assert lines[0].startswith("opsagent: configuration error: ")
