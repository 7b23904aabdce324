"""Program capabilities: a declaration compiles to a Capability whose doer runs one program
(tests/programs/stubdoer.py) and reads how it ended as the old agent did."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import attrs
import pytest
from opsagent import Outcome, Program, arg, derive_reason, flag, option
from opsagent.capability import DeclarationError
from opsagent.testing.jobs import make_job

STUB = str(Path(__file__).with_name("stubdoer.py"))


@attrs.frozen
class Conf:
    root: str = ""
    python: str = STUB


@attrs.frozen
class In:
    source: str
    only: list[str] | None = None
    all: bool = False
    note: str | None = None


def program(**kw) -> Program:
    base = dict(
        msg_type="t_prog",
        input=In,
        argv=(
            "{python}",
            "scripts/t.py",
            arg("source"),
            option("--only", "only"),
            flag("--all", "all"),
            option("--note", "note"),
        ),
        cwd="{root}",
        config=Conf,
        events={"ok": "t_ready", "error": "t_ready"},
        time_limit=5,
    )
    return Program(**{**base, **kw})


def plan(root: Path, **behaviour) -> None:
    (root / "plan.json").write_text(json.dumps({"*": behaviour}))


def calls(root: Path) -> list[dict]:
    path = root / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(p: Program, inp, root: Path, **job) -> Outcome:
    cap = p.capability()
    j = make_job(cap, cache_dir=root / "cache", config={"root": str(root)}, **job)
    return cap.doer(inp, j)


def test_argv_is_literals_and_one_value_per_placeholder(tmp_path):
    plan(tmp_path, stdout="done\n")
    out = run(program(summary="last_line"), In("csv", ["b", "a"], True, "x y\nz"), tmp_path)
    assert out == Outcome.ok(summary="done")
    (call,) = calls(tmp_path)
    assert call["argv"] == [
        "scripts/t.py",
        "csv",
        "--only",
        "b",
        "--only",
        "a",
        "--all",
        "--note",
        "x y\nz",
    ]
    assert call["cwd"] == str(tmp_path)


def test_absent_options_and_false_flags_are_left_out(tmp_path):
    plan(tmp_path)
    run(program(), In("csv"), tmp_path)
    assert calls(tmp_path)[0]["argv"] == ["scripts/t.py", "csv"]


@pytest.mark.parametrize("value", ["-x", "--all", "--", "-", "a\0b", "x" * 5000])
def test_a_value_that_could_be_an_option_never_reaches_the_program(tmp_path, value):
    plan(tmp_path)
    out = run(program(), In(value), tmp_path)
    assert out.status == "error" and "$.source" in out.reason
    out = run(program(), In("csv", only=["ok", value]), tmp_path)
    assert out.status == "error" and "$.only" in out.reason
    assert calls(tmp_path) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (("{python}", "--source={source}"), "mixes text and a placeholder"),
        (("{python}", "{source}{note}"), "mixes text and a placeholder"),
        (("{python}", "{nothing}"), "neither a field of In"),
        (("{python}", option("--x", "root")), "takes an input field"),
        ((), "empty"),
    ],
)
def test_declarations_that_break_the_rules_are_refused(argv, message):
    with pytest.raises(DeclarationError, match=message):
        program(argv=argv)


def test_cwd_never_comes_from_a_request():
    with pytest.raises(DeclarationError, match="cwd"):
        program(cwd="{source}")


@pytest.mark.parametrize(
    "rc, stderr, reason",
    [
        (2, "", "rc=2"),
        (1, "INFO boot\nValueError: bad thing\nINFO cleanup\n", "ValueError: bad thing"),
        (1, "first ERROR one\nsecond Error: two\nthird\n", "second Error: two"),
        (1, "just a line\nlast line  \n", "last line"),
        (-15, "ERROR ignored", "killed by signal SIGTERM"),
        (-200, "", "killed by signal 200"),
    ],
)
def test_the_reason_rule_of_the_old_agent(rc, stderr, reason):
    assert derive_reason(rc, stderr) == reason


def test_exit_codes_map_to_outcomes_and_others_are_errors(tmp_path):
    p = program(exit_codes={0: "ok", 3: "warning"})
    plan(tmp_path, exit=3, stderr="WARNING: proxy expires in 5 days\n")
    out = run(p, In("csv"), tmp_path)
    assert out.status == "warning" and out.succeeded
    assert out.reason == "WARNING: proxy expires in 5 days"
    plan(tmp_path, exit=4, stderr="CRITICAL gone\nbye\n")
    assert run(p, In("csv"), tmp_path) == Outcome.error("CRITICAL gone")


def test_a_signal_is_named(tmp_path):
    plan(tmp_path, signal="SIGTERM")
    assert run(program(), In("csv"), tmp_path) == Outcome.error("killed by signal SIGTERM")


def test_timeout_kills_the_group_grandchildren_too(tmp_path):
    plan(tmp_path, grandchild=True, sleep=60)
    started = time.monotonic()
    out = run(program(), In("csv"), tmp_path, time_limit=1)
    assert out == Outcome.timeout("timed out after 1s")
    assert time.monotonic() - started < 10
    kid = int((tmp_path / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(kid):
        time.sleep(0.05)
    assert not _alive(kid)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_grandchild_left_behind_by_a_doer_that_exits_is_killed(tmp_path):
    plan(tmp_path, grandchild=True)
    assert run(program(), In("csv"), tmp_path).status == "ok"
    kid = int((tmp_path / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(kid):
        time.sleep(0.05)
    assert not _alive(kid)


@pytest.mark.parametrize(
    "protocol, stdout, rc, expect",
    [
        ("last_json", 'noise\n{"verified": true}\n', 0, Outcome.ok(result={"verified": True})),
        ("last_json", "not json\n", 0, "error"),
        (
            "last_json",
            '{"credentials": []}\n',
            3,
            Outcome.warning("rc=3", result={"credentials": []}),
        ),
        (
            "json_list",
            '[{"scope": "all", "outcome": "snap"}]\n',
            0,
            Outcome.ok(result=[{"scope": "all", "outcome": "snap"}]),
        ),
        ("json_list", '{"a": 1}\n', 0, "error"),
        ("summary_line", 'x\nSUMMARY {"days": 2}\ny\n', 0, Outcome.ok(result={"days": 2})),
        ("summary_line", "no summary\n", 0, Outcome.ok()),
        (
            "skipped_prefix",
            "SKIPPED no URL configured\n",
            0,
            Outcome.skipped("SKIPPED no URL configured"),
        ),
        ("skipped_prefix", "imported 3\n", 0, Outcome.ok()),
    ],
)
def test_stdout_protocols(tmp_path, protocol, stdout, rc, expect):
    result = "" if protocol == "skipped_prefix" else "result"
    p = program(stdout=protocol, result=result, exit_codes={0: "ok", 3: "warning"})
    plan(tmp_path, stdout=stdout, exit=rc)
    out = run(p, In("csv"), tmp_path)
    if expect == "error":
        assert out.status == "error" and "output protocol" in out.reason
    else:
        assert out == expect


def test_stdin_is_a_json_document_of_a_field(tmp_path):
    @attrs.frozen
    class Items:
        items: list[str]

    p = Program(
        msg_type="t_stdin",
        input=Items,
        argv=(STUB, "--batch"),
        cwd=str(tmp_path),
        stdin="items",
        events={"ok": "t", "error": "t"},
    )
    plan(tmp_path)
    cap = p.capability()
    assert cap.doer(Items(["a", "b"]), make_job(cap, cache_dir=tmp_path)).status == "ok"
    assert json.loads(calls(tmp_path)[0]["stdin"]) == ["a", "b"]


def test_output_is_relayed_line_by_line_and_bounded(tmp_path, monkeypatch):
    from loguru import logger

    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(m.record["message"]), level="INFO")
    try:
        plan(tmp_path, stdout="".join(f"line {i}\n" for i in range(600)), stderr="oops\n")
        run(program(name="t-doer"), In("csv"), tmp_path)
        relayed = [m for m in seen if m.startswith("  t-doer: ")]
        assert relayed[0] == "  t-doer: line 0"
        assert "  t-doer: [further output not relayed]" in relayed
        assert len(relayed) == 501
        seen.clear()
        plan(tmp_path, stdout="fine\n")
        run(program(name="t-doer", relay="on_failure"), In("csv"), tmp_path)
        assert not [m for m in seen if m.startswith("  t-doer: ")]
        plan(tmp_path, stdout="partial\n", stderr="ERROR broke\n", exit=1)
        run(program(name="t-doer", relay="on_failure"), In("csv"), tmp_path)
        assert [m for m in seen if m.startswith("  t-doer: ")] == [
            "  t-doer: partial",
            "  t-doer: ERROR broke",
        ]
    finally:
        logger.remove(sink)


def test_dedup_key_is_the_old_agents_key(tmp_path):
    cap = program(dedup_key="catalog_import:{source}").capability()
    assert cap.key_of(In("csv")) == "catalog_import:csv"
    cap = program(dedup_key="t_prog_{source}").capability()
    assert cap.key_of(In("csv")) == "t_prog:t_prog_csv"


def test_env_is_the_allow_list_plus_declared_names(tmp_path, monkeypatch):
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
    monkeypatch.setenv("SECRET_NOT_ALLOWED", "x")
    plan(tmp_path)
    p = program(env=("DJANGO_SETTINGS_MODULE",))
    run(p, In("csv"), tmp_path)
    assert calls(tmp_path)[0]["env"] == {"DJANGO_SETTINGS_MODULE": "proj.settings"}


def test_time_limit_env_sets_the_limit_and_the_host_waits_past_it(monkeypatch):
    from opsagent.host import config
    from opsagent.isolation.jobs import effective

    cap = program(time_limit_env="T_PROG_TIMEOUT").capability()
    monkeypatch.setenv("T_PROG_TIMEOUT", "42")
    eff = effective(cap, config.Config())
    assert eff.time_limit == 42 and eff.backstop > 0


def test_cooldown_ends_a_request_skipped_with_its_event(tmp_path):
    p = program(cooldown=300, cooldown_env="T_PROG_MIN_INTERVAL")
    plan(tmp_path)
    assert run(p, In("csv"), tmp_path).status == "ok"
    second = run(p, In("csv"), tmp_path)
    assert second.status == "skipped" and "cooldown" in second.reason
    assert len(calls(tmp_path)) == 1
    # The old agent's variable set to 0 turns it off.
    cap = p.capability()
    job = make_job(
        cap,
        cache_dir=tmp_path / "cache",
        config={"root": str(tmp_path)},
        env={**os.environ, "T_PROG_MIN_INTERVAL": "0"},
    )
    assert cap.doer(In("csv"), job).status == "ok"


def test_selftest_checks_program_and_working_directory(tmp_path):
    cap = program().capability()
    job = make_job(cap, cache_dir=tmp_path, config={"root": str(tmp_path / "nowhere")})
    found = {c.name: c.status for c in cap.checks(job)}
    assert found["working directory"] == "fail"
    assert found[f"program {STUB}"] == "ok"
    job = make_job(cap, cache_dir=tmp_path, config={"root": str(tmp_path), "python": "/no/py"})
    found = {c.name: c.status for c in cap.checks(job)}
    assert found["working directory"] == "ok" and found["program /no/py"] == "fail"
    assert found["script"] == "fail"


def test_a_missing_working_directory_says_what_to_configure(tmp_path):
    cap = program().capability()
    job = make_job(cap, cache_dir=tmp_path, config={"root": ""})
    out = cap.doer(In("csv"), job)
    assert out.status == "error"
    assert "working directory '' (the configured {root}) is not a directory" in out.reason
    assert calls(tmp_path) == []


def test_not_startable_is_an_error_not_a_crash(tmp_path):
    cap = program().capability()
    job = make_job(cap, cache_dir=tmp_path, config={"root": str(tmp_path), "python": "/no/py"})
    out = cap.doer(In("csv"), job)
    assert out.status == "error" and "could not be started" in out.reason
