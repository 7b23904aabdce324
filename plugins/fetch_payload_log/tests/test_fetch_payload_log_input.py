"""The input schema: ids as digits (string or integer in, string out), Rucio names checked."""

from __future__ import annotations

import pytest
from opsagent.testing import (
    ConfigError,
    InputError,
    config_from_table,
    host_overrides,
    json_schema,
    structure,
)
from opsagent_fetch_payload_log import FetchInput, declaration

GOOD = {"scope": "epic", "lfn": "panda.1001.000007.log.tgz", "jeditaskid": "1001", "pandaid": 4242}


def test_ids_arrive_as_strings_or_integers_and_come_out_as_strings() -> None:
    inp = structure(GOOD, FetchInput)
    assert (inp.jeditaskid, inp.pandaid) == ("1001", "4242")
    assert (inp.force, inp.requested_by) == (False, None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pandaid", "../../x", "$.pandaid: expected digits, got '../../x'"),
        ("jeditaskid", "12/34", "$.jeditaskid: expected digits, got '12/34'"),
        ("pandaid", -5, "$.pandaid: expected digits, got -5"),
        ("pandaid", True, "$.pandaid: expected digits, got True"),
        ("scope", "epic/../x", "$.scope: expected a Rucio scope"),
        ("scope", "a" * 26, "$.scope: expected a Rucio scope"),
        ("lfn", "x.log.tgz; rm -rf /", "$.lfn: expected a Rucio file name"),
        ("lfn", "-f.log.tgz", "$.lfn: expected a Rucio file name"),
        ("lfn", "a\nb", "$.lfn: expected a Rucio file name"),
        ("force", "yes", "$.force: expected true or false"),
        ("requested_by", "x\x1b[31m", "$.requested_by: expected printable text"),
    ],
)
def test_bad_fields_are_refused_with_their_path(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError) as err:
        structure({**GOOD, field: value}, FetchInput)
    assert any(e.startswith(message) for e in err.value.errors), err.value.errors


def test_every_missing_field_is_named() -> None:
    with pytest.raises(InputError) as err:
        structure({}, FetchInput)
    assert sorted(err.value.errors) == sorted(
        f"$.{f}: required field missing" for f in ("scope", "lfn", "jeditaskid", "pandaid")
    )


def test_the_json_schema_carries_the_rucio_patterns() -> None:
    schema = json_schema(FetchInput)
    assert schema["required"] == ["scope", "lfn", "jeditaskid", "pandaid"]
    assert schema["properties"]["scope"]["pattern"] == "^(?:[A-Za-z0-9_.-]{1,25})$"
    assert "pattern" in schema["properties"]["lfn"]


def test_the_declaration_matches_the_wire_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    cap = declaration()
    assert cap.msg_type == "fetch_payload_log"
    assert cap.events == {"ok": "payload_log_ready", "error": "payload_log_failed"}
    assert cap.time_limit == 180
    # The Rucio password (auth_type = userpass, test servers) is a credential too.
    assert cap.credentials == ("x509_proxy", "rucio_userpass")
    assert cap.optional_credentials == ("rucio_userpass",)
    inp = structure(GOOD, FetchInput)
    assert cap.key_of(inp) == "fetch_payload_log:1001/4242"
    assert cap.echo_of(inp) == {"pandaid": "4242", "jeditaskid": "1001"}
    # The old agent's variable is the host's time limit override.
    monkeypatch.setenv("EPICPROD_FETCH_TIMEOUT", "45")
    assert host_overrides(cap) == {"time_limit": 45}
    monkeypatch.setenv("EPICPROD_FETCH_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="EPICPROD_FETCH_TIMEOUT: expected a positive number"):
        host_overrides(cap)


def test_samples_fit_the_schema() -> None:
    for sample in declaration().samples:
        structure(dict(sample), FetchInput)


def test_the_configuration_section_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUCIO_URL", "https://rucio.example")
    monkeypatch.setenv("RUCIO_ACCOUNT", "eicprod")
    cfg = config_from_table(declaration(), {"xrdcp_timeout": 60})
    assert (cfg.rucio_url, cfg.account, cfg.vo, cfg.auth_type, cfg.xrdcp_timeout) == (
        "https://rucio.example",
        "eicprod",
        "def",
        "x509",
        60.0,
    )
    for table, fragment in (
        ({"auth_type": "kerberos"}, "auth_type"),
        ({"xrdcp_timeout": 0}, "xrdcp_timeout"),
        ({"max_members": "many"}, "max_members"),
        ({"rucio_host": "x"}, "rucio_host"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            config_from_table(declaration(), table)
