"""opsagent.testing: what a capability's tests get from the kit behaves like the host."""

from __future__ import annotations

import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import opsagent_testcaps
import pytest
import requests
from opsagent import Capability, Outcome, hookimpl
from opsagent.credentials.store import env_name
from opsagent.host.config import ConfigError
from opsagent.host.plugins import PluginError
from opsagent.testing import FakeCredentials, Harness, declared, make_job, processes_with_env
from opsagent.testing.http import FakeServer

pytest_plugins = ["pytester"]


@attrs.frozen
class Empty:
    pass


@attrs.frozen
class Settings:
    url: str = "http://127.0.0.1:1"
    tries: int = 3


class needs_a_token:  # a plugin module stand-in
    __name__ = "needs_a_token"

    @staticmethod
    @hookimpl
    def register_capabilities(register: Callable[[Capability], None]) -> None:
        register(
            Capability(
                msg_type="needs_a_token",
                input=Empty,
                doer=lambda inp, job: Outcome.ok(),
                events={"ok": "done", "error": "failed"},
                credentials=("token", "other.cert"),
                config=Settings,
                time_limit=7,
            )
        )


def test_declared_loads_a_module_as_the_host_does() -> None:
    caps = declared(opsagent_testcaps)
    assert "test_echo" in caps and caps["test_echo"].entry_point == "opsagent_testcaps"
    assert "health_ping" not in caps


def test_declared_refuses_what_the_host_refuses() -> None:
    class claims_ping:
        __name__ = "claims_ping"

        @staticmethod
        @hookimpl
        def register_capabilities(register: Callable[[Capability], None]) -> None:
            register(
                Capability(
                    msg_type="health_ping",
                    input=Empty,
                    doer=lambda inp, job: None,
                    events={"ok": "pong", "error": "pong"},
                )
            )

    with pytest.raises(PluginError, match="'health_ping' is reserved for the host"):
        declared(claims_ping)  # type: ignore[arg-type]


def test_fake_credentials_are_private_files_named_like_systemd_credentials(
    opsagent_credentials: FakeCredentials,
) -> None:
    token = opsagent_credentials.add("token", "s3cret")
    assert token.path == opsagent_credentials.directory / "token"
    assert token.read() == "s3cret"
    assert stat.S_IMODE(token.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(opsagent_credentials.directory.stat().st_mode) == 0o700
    assert opsagent_credentials.add("token", "new").read() == "new"
    assert "s3cret" not in repr(token)


def test_fake_credentials_provide_what_a_capability_declares_and_configure_a_host(
    opsagent_credentials: FakeCredentials,
) -> None:
    cap = declared(needs_a_token)["needs_a_token"]  # type: ignore[arg-type]
    opsagent_credentials.add("token", "mine")
    assert opsagent_credentials.provide(cap) is opsagent_credentials
    assert sorted(opsagent_credentials) == ["other.cert", "token"]
    assert opsagent_credentials["token"].read() == "mine"  # kept, not replaced
    assert opsagent_credentials["other.cert"].read() == "fake-other.cert"
    d = opsagent_credentials.directory
    assert opsagent_credentials.config() == {
        "credentials.token": {"file": str(d / "token")},
        'credentials."other.cert"': {"file": str(d / "other.cert")},
    }


def test_make_job_hands_over_only_declared_credentials_as_the_host_does(
    tmp_path: Path, opsagent_credentials: FakeCredentials
) -> None:
    cap = declared(needs_a_token)["needs_a_token"]  # type: ignore[arg-type]
    opsagent_credentials.provide(cap).add("undeclared")
    job = make_job(cap, cache_dir=tmp_path, credentials=opsagent_credentials)
    assert sorted(job.credentials) == ["other.cert", "token"]
    assert job.env[env_name("token")] == str(opsagent_credentials["token"].path)
    assert env_name("undeclared") not in job.env
    assert job.env["SWF_TMP_DIR"] == str(tmp_path)
    assert job.time_limit == 7 and job.msg_type == "needs_a_token"
    job.remember("k", "v")
    assert job.recall("k") == "v"
    with pytest.raises(LookupError, match="'undeclared' was not declared by needs_a_token"):
        job.credential("undeclared")


def test_make_job_structures_a_config_table_like_the_host(tmp_path: Path) -> None:
    cap = declared(needs_a_token)["needs_a_token"]  # type: ignore[arg-type]
    assert make_job(cap, cache_dir=tmp_path).config == Settings()
    assert make_job(cap, cache_dir=tmp_path, config={"tries": 5}).config == Settings(tries=5)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['retries'\]"):
        make_job(cap, cache_dir=tmp_path, config={"retries": 5})
    with pytest.raises(ConfigError, match="capability.needs_a_token.tries: expected an integer"):
        make_job(cap, cache_dir=tmp_path, config={"tries": "5"})


def test_the_harness_answers_health_ping_and_runs_a_job(
    opsagent_harness: Callable[..., Harness],
) -> None:
    host = opsagent_harness(modules=[opsagent_testcaps])
    pong = host.ping()
    assert pong["msg_type"] == "pong" and pong["agent"] == "harness"
    event = host.send("test_echo", {"text": "hi"})
    assert event["msg_type"] == "test_echoed" and event["text"] == "hi"
    host.join()


def test_opsagent_http_serves_on_loopback_and_closes_after_the_test(
    opsagent_http: Callable[..., FakeServer],
) -> None:
    server = opsagent_http([("GET", "/v", {"v": 1})])
    assert server.url.startswith("http://127.0.0.1:")
    assert requests.get(f"{server.url}/v", timeout=5).json() == {"v": 1}


def test_a_fake_whose_handler_raises_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
        import requests

        def test_calls_a_broken_fake(opsagent_http):
            server = opsagent_http()
            server.route("GET", "/x", lambda req: 1 / 0)
            assert requests.get(server.url + "/x", timeout=5).status_code == 500
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*a fake server's handler raised: ZeroDivisionError*"])


def test_harness_send_returns_the_rejection_with_its_path(
    opsagent_harness: Callable[..., Harness],
) -> None:
    host = opsagent_harness(modules=[opsagent_testcaps])
    answer = host.send("test_side_effect", {"n": "../x"})
    assert answer["msg_type"] == "request_rejected"
    assert answer["errors"] == ["$.n: expected digits, got '../x'"]
    assert not (host.config.cache_dir / "side-effects").exists()


class keyed:  # a plugin module stand-in: one dedup key for every request
    __name__ = "keyed"

    @staticmethod
    @hookimpl
    def register_capabilities(register: Callable[[Capability], None]) -> None:
        register(
            Capability(
                msg_type="keyed",
                input=Empty,
                doer=lambda inp, job: Outcome.ok(),
                events={"ok": "keyed_done", "error": "keyed_failed"},
                dedup_key=lambda inp: "one",
                isolation="thread",
            )
        )


def test_once_a_caller_has_the_event_the_dedup_key_is_free(
    opsagent_harness: Callable[..., Harness],
) -> None:
    """The key is let go before the event is published, not after the journal write and
    the acknowledgement: a caller repeating the work at once is never refused."""
    host = opsagent_harness(modules=[keyed])
    answers = [host.send("keyed", {})["msg_type"] for _ in range(200)]
    assert answers == ["keyed_done"] * 200


def test_processes_with_env_finds_a_child_by_its_environment_until_it_is_gone(
    tmp_path: Path,
) -> None:
    marker = str(tmp_path / "cache")
    assert processes_with_env(marker) == []
    child = subprocess.Popen(["sleep", "30"], env={"SWF_TMP_DIR": marker})
    try:
        # Until the child has exec'd, /proc shows the environment it was forked with.
        deadline = time.monotonic() + 10
        while not processes_with_env(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert processes_with_env(marker) == [child.pid]
        assert processes_with_env(marker + "-other") == []
    finally:
        child.kill()
        child.wait()
    assert processes_with_env(marker) == []
