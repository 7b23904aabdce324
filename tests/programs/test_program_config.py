"""A program capability declared in the host's configuration (``[[program]]``) behaves as
the same declaration shipped in a package (tests/siteprograms); a broken table is shown
broken and the host starts with the rest.  One host on the real ActiveMQ."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opsagent.capability import DeclarationError
from opsagent.host import config as configuration
from opsagent.host import programs
from support import OPSAGENT, Caller, HostProcess

pytestmark = pytest.mark.broker

HERE = Path(__file__).parent
STUB = str(HERE / "stubdoer.py")
SITE = HERE.parent / "siteprograms"

PROGRAM = """
[[program]]
msg_type = "t_cfg_report"
argv = ["{{python}}", "report.py", "{{subject}}", {{ option = "--tag", field = "tags" }},
        {{ flag = "--verbose", field = "verbose" }}]
cwd = "{{root}}"
values = {{ python = "{python}", root = "{root}" }}
events = {{ ok = "t_report_ready", error = "t_report_ready" }}
time_limit = 20
dedup_key = "t_report:{{subject}}"
exit_codes = {{ "0" = "ok", "3" = "warning" }}
stdout = "last_json"
result = "report"
echo = ["subject"]
action = "t_report"
name = "report"

[program.input.subject]
type = "string"
required = true
pattern = "[a-z][a-z0-9_]{{0,40}}"
what = "a subject"

[program.input.tags]
type = "strings"
pattern = "[a-z0-9][a-z0-9 ]{{0,40}}"
what = "a tag"

[program.input.verbose]
type = "boolean"

[[program]]
msg_type = "t_cfg_broken"
argv = ["/bin/echo", "--subject={{subject}}"]
events = {{ ok = "t_x", error = "t_x" }}

[program.input.subject]
type = "string"
"""


@pytest.fixture
def served(tmp_path, broker):
    root = tmp_path / "checkout"
    root.mkdir()
    host = HostProcess(
        tmp_path / "host", broker, name="programs",
        extra={"capability.t_pkg_report": {"python": STUB, "root": str(root)}},
        paths=(SITE,),
    )
    with host.config.open("a") as fh:
        fh.write(PROGRAM.format(python=STUB, root=root))
    host.start()
    caller = Caller(broker, host.queue, host.topic)
    yield root, host, caller
    caller.close()
    host.stop()


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without what names its job or its msg_type."""
    kept = {k: v for k, v in event.items() if k not in ("job_id", "request", "request_id")}
    text = json.dumps(kept).replace("t_pkg_report", "T").replace("t_cfg_report", "T")
    return json.loads(text)


def test_a_configured_program_behaves_as_the_same_package(served):
    root, host, caller = served
    cases = [
        ({"subject": "disk", "tags": ["a", "b c"], "verbose": True},
         {"stdout": 'x\n{"used": 3}\n'}),
        ({"subject": "disk"}, {"stdout": '{"used": 1}\n', "stderr": "WARNING low\n", "exit": 3}),
        ({"subject": "disk"}, {"stderr": "Exception: boom\n", "exit": 1}),
        ({"subject": "disk"}, {"stdout": "not json\n"}),
        ({"subject": "Disk"}, {}),
    ]
    for payload, behaviour in cases:
        (root / "plan.json").write_text(json.dumps({"report.py": behaviour}))
        seen = []
        for msg_type in ("t_pkg_report", "t_cfg_report"):
            (root / "calls.jsonl").unlink(missing_ok=True)
            rid = caller.send(msg_type, payload, reply=False)
            event = caller.wait_event(rid)
            calls = (root / "calls.jsonl").read_text().splitlines() if (
                root / "calls.jsonl").exists() else []
            seen.append((comparable(event), [json.loads(c)["argv"] for c in calls]))
        assert seen[0] == seen[1], payload
    # A value that could be an option is refused by both, before anything runs.
    for msg_type in ("t_pkg_report", "t_cfg_report"):
        for bad in ({"subject": "-rf"}, {"subject": "disk", "tags": ["ok", "--all"]}):
            refused = caller.wait_event(caller.send(msg_type, bad, reply=False))
            assert refused["code"] == "invalid", (msg_type, bad, refused)
    # The first case, as run: one argument per value, the options repeated.
    (root / "plan.json").write_text(json.dumps({"report.py": {"stdout": '{"used": 3}\n'}}))
    rid = caller.send("t_cfg_report", {"subject": "disk", "tags": ["a", "b c"],
                                       "verbose": True}, reply=False)
    event = caller.wait_event(rid)
    assert event["msg_type"] == "t_report_ready" and event["report"] == {"used": 3}
    argv = json.loads((root / "calls.jsonl").read_text().splitlines()[-1])["argv"]
    assert argv == ["report.py", "disk", "--tag", "a", "--tag", "b c", "--verbose"]
    # The broken table did not stop the host; it is reported broken.
    host.wait_log("t_cfg_broken")
    rid = caller.send("t_cfg_broken", {"subject": "x"}, reply=False)
    refused = caller.wait_event(rid)
    assert refused["code"] == "unavailable"
    assert "mixes text and a placeholder" in refused["reason"]
    shown = subprocess.run(
        [*OPSAGENT, "--config", str(host.config), "plugins", "--json"],
        capture_output=True, text=True, env=host.env, check=True,
    )
    rows = {r.get("msg_type") or r.get("plugin"): r for r in json.loads(shown.stdout)}
    assert rows["t_cfg_report"]["status"] == "ok"
    assert rows["t_cfg_report"]["distribution"] == "[[program]]"
    assert rows["t_cfg_broken"]["status"] == "broken"
    assert "mixes text and a placeholder" in rows["t_cfg_broken"]["error"]


@pytest.mark.parametrize(
    "table, message",
    [
        ({"msg_type": "t", "argv": ["a"], "events": {"ok": "e", "error": "e"}, "bogus": 1},
         "$: unknown key"),
        ({"msg_type": "t", "argv": ["a", "{x}"], "events": {"ok": "e", "error": "e"},
          "input": {"x": {"type": "text"}}}, "$.input[x].type"),
        ({"msg_type": "t", "argv": "a", "events": {"ok": "e", "error": "e"}}, "$.argv"),
        ({"msg_type": "t", "argv": ["a", "{y}"], "events": {"ok": "e", "error": "e"}},
         "argv[1]: {y} is neither"),
        ({"msg_type": "t", "argv": ["a"], "events": {"ok": "e"}}, "events"),
    ],
)
def test_broken_tables_say_where(table, message):
    with pytest.raises(DeclarationError) as info:
        programs.from_table(table)
    assert message in str(info.value)


def test_config_file_keeps_program_tables_and_refuses_unknown_sections(tmp_path):
    path = tmp_path / "h.toml"
    path.write_text('[[program]]\nmsg_type = "a"\n[[program]]\nmsg_type = "b"\n')
    assert [t["msg_type"] for t in configuration.load(path).program] == ["a", "b"]
    path.write_text("[epicprodd]\nmonitor_root = '/x'\n")
    with pytest.raises(configuration.ConfigError, match="epicprodd"):
        configuration.load(path)
    path.write_text("[sections.epicprod]\nmonitor_root = '/x'\n")
    with pytest.raises(configuration.ConfigError, match="sections"):
        configuration.load(path)
    # A shared table an installed distribution declares (opsagent-epicprod's) is kept.
    path.write_text("[epicprod]\nmonitor_root = '/x'\n")
    assert configuration.load(path).sections == {"epicprod": {"monitor_root": "/x"}}


def test_schema_and_selftest_see_a_configured_program(tmp_path):
    cfg = tmp_path / "h.toml"
    cfg.write_text(
        f'[host]\ncache_dir = "{tmp_path}/cache"\nstate_dir = "{tmp_path}/state"\n'
        + PROGRAM.format(python=STUB, root=tmp_path / "nowhere")
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    schema = subprocess.run([*OPSAGENT, "--config", str(cfg), "schema", "t_cfg_report"],
                            capture_output=True, text=True, check=True, env=env)
    props = json.loads(schema.stdout)["properties"]
    assert props["subject"]["pattern"] == "^(?:[a-z][a-z0-9_]{0,40})$"
    test = subprocess.run(
        [*OPSAGENT, "--config", str(cfg), "selftest", "--json", "--capability", "t_cfg_report"],
        capture_output=True, text=True, env=env,
    )
    checks = {(c["subject"], c["check"]): c["status"] for c in json.loads(test.stdout)["checks"]}
    assert checks[("t_cfg_report", "working directory")] == "fail"
    assert checks[("t_cfg_report", f"program {STUB}")] == "ok"


def test_a_configured_program_runs_in_a_job_process_from_its_table(tmp_path):
    # `opsagent do` runs a process job as the host does: the job process rebuilds the
    # capability from the table it is handed.
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "plan.json").write_text(json.dumps({"report.py": {"stdout": '{"n": 1}\n'}}))
    cfg = tmp_path / "h.toml"
    cfg.write_text(
        f'[host]\ncache_dir = "{tmp_path}/cache"\nstate_dir = "{tmp_path}/state"\n'
        + PROGRAM.format(python=STUB, root=root)
    )
    done = subprocess.run(
        [*OPSAGENT, "--config", str(cfg), "do", "t_cfg_report", "--json", '{"subject": "disk"}'],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["report"] == {"n": 1}
    assert sys.executable
