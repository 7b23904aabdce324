{%- set creds = cookiecutter.credentials.split(",") | map("trim") | select | list if cookiecutter.needs_credentials else [] -%}
"""The declaration, the work on its own, and the capability in a real host.

The fixtures ``opsagent_harness`` and ``opsagent_credentials`` come from ``opsagent.testing``,
a pytest plugin installed with the host.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from opsagent import {% if creds %}JobFailed, {% endif %}Outcome
from opsagent.testing import FakeCredentials, Harness, declared, installed, make_job, structure

import {{ cookiecutter.__package }}
from {{ cookiecutter.__package }} import work

ROOT = Path(__file__).resolve().parents[1]
CAP = declared({{ cookiecutter.__package }})[{{ cookiecutter.msg_type | tojson }}]


@pytest.fixture
def host(opsagent_harness, opsagent_credentials: FakeCredentials) -> Harness:
    """A host running this capability{% if creds %}, with a fake of every credential it needs{% endif %}."""
    return opsagent_harness(
        modules=[{{ cookiecutter.__package }}],
        config=opsagent_credentials.provide(CAP).config(),
    )


def test_the_declaration() -> None:
    assert CAP.events["ok"] == f"{CAP.msg_type}_done"
    assert CAP.events["error"] == CAP.events["timeout"] == f"{CAP.msg_type}_failed"
    assert CAP.credentials == ({% for c in creds %}{{ c | tojson }}{% if not loop.last %}, {% endif %}{% endfor %}{% if creds | length == 1 %},{% endif %})
    for sample in CAP.samples:
        structure(dict(sample), CAP.input)


def test_the_installed_distribution_offers_it() -> None:
    # Fails until `pip install -e .` has put the entry point in place.
    assert installed(CAP.msg_type).distribution == "{{ cookiecutter.__distribution }}"


def test_the_sample_messages_are_the_declared_samples() -> None:
    sent = []
    for path in sorted((ROOT / "samples").glob("*.json")):
        message = json.loads(path.read_text())
        assert message.pop("msg_type") == CAP.msg_type, path
        message.pop("namespace", None)
        sent.append(message)
    assert sorted(sent, key=json.dumps) == sorted(CAP.samples, key=json.dumps)


def test_the_readme_lists_msg_type_input_credentials_and_events() -> None:
    readme = (ROOT / "README.md").read_text()
    names = [CAP.msg_type, *CAP.credentials, *CAP.events.values()]
    names += [field.name for field in attrs.fields(CAP.input)]
    assert [name for name in names if f"`{name}`" not in readme] == []
    assert f"{CAP.time_limit:g} s" in readme


def test_the_work_records_the_target_once(
    tmp_path: Path, opsagent_credentials: FakeCredentials
) -> None:
    creds = opsagent_credentials.provide(CAP)
    job = make_job(CAP, cache_dir=tmp_path / "cache", credentials=creds)
    inp = structure({"target": "t1"}, CAP.input)
    result = tmp_path / "cache" / CAP.msg_type / "t1.json"

    outcome = work.{{ cookiecutter.msg_type }}(inp, job)
    assert outcome == Outcome.ok(result=str(result), changed=True)
    assert json.loads(result.read_text()) == {"target": "t1", "job_id": job.id}
    # Delivered again (after a crash, say): nothing changes.
    outcome = work.{{ cookiecutter.msg_type }}(inp, job)
    assert outcome == Outcome.ok(result=str(result), changed=False)


def test_a_dry_run_changes_nothing(tmp_path: Path, opsagent_credentials: FakeCredentials) -> None:
    creds = opsagent_credentials.provide(CAP)
    job = make_job(CAP, cache_dir=tmp_path / "cache", credentials=creds)
    inp = structure({"target": "t1", "dry_run": True}, CAP.input)
    outcome = work.{{ cookiecutter.msg_type }}(inp, job)
    assert outcome.status == "ok" and "would_write" in outcome.data
    assert not (tmp_path / "cache").exists()
{%- if creds %}


def test_an_empty_credential_fails_the_job_and_says_which(
    tmp_path: Path, opsagent_credentials: FakeCredentials
) -> None:
    opsagent_credentials.provide(CAP).add(CAP.credentials[0], "")
    job = make_job(CAP, cache_dir=tmp_path / "cache", credentials=opsagent_credentials)
    with pytest.raises(JobFailed, match=f"credential {CAP.credentials[0]} is empty"):
        work.{{ cookiecutter.msg_type }}(structure({"target": "t1"}, CAP.input), job)
    assert not (tmp_path / "cache").exists()
{%- endif %}


def test_every_sample_runs_in_a_real_host(host: Harness) -> None:
    for sample in CAP.samples:
        event = host.send(CAP.msg_type, dict(sample))
        assert event["msg_type"] == CAP.events["ok"], event
        assert event["ok"] is True and event["target"] == sample["target"]
    host.join()


def test_a_bad_request_is_refused_before_any_work(host: Harness) -> None:
    answer = host.send(CAP.msg_type, {"target": "../../etc"})
    assert answer["msg_type"] == "request_rejected"
    assert answer["errors"] == [
        "$.target: expected a name (letters, digits, . _ -), got '../../etc'"
    ]
{%- if creds %}


def test_without_its_credentials_the_capability_is_unavailable(
    opsagent_harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    host = opsagent_harness(modules=[{{ cookiecutter.__package }}])
    answer = host.send(CAP.msg_type, dict(CAP.samples[0]))
    assert answer["msg_type"] == "request_rejected" and answer["code"] == "unavailable"
    assert any(f"credential {name!r}" in answer["reason"] for name in CAP.credentials)
{%- endif %}
