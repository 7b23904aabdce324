"""The declaration, the input and config schemas, the TLS choice, the atomic cache writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import opsagent_rucio_snapshot as plugin
import pytest
from opsagent import Capability, JobFailed
from opsagent.testing import ConfigError, InputError, config_from_table, structure
from opsagent_rucio_snapshot import SnapshotInput, cachefiles
from opsagent_rucio_snapshot.update import tls_choice


def test_registers_one_capability_with_the_wire_contract() -> None:
    got: list[Capability] = []
    plugin.register_capabilities(register=got.append)
    [cap] = got
    assert cap.msg_type == "rucio_snapshot_update"
    assert (
        cap.event_for("ok")
        == cap.event_for("error")
        == cap.event_for("timeout")
        == "rucio_snapshot_ready"
    )
    assert cap.time_limit == 900
    assert cap.credentials == ("rucio_userpass",)
    assert cap.isolation == "process" and cap.concurrency == 1
    # one job at a time, globally, whatever the input
    assert cap.key_of(SnapshotInput()) == cap.key_of(
        structure({"campaigns": ["26.02.0"], "created_by": "x"}, SnapshotInput)
    )
    assert cap.key_of(SnapshotInput()) is not None
    for sample in cap.samples:
        structure(dict(sample), cap.input)
    assert cap.echo_of(SnapshotInput(created_by="ann")) == {"created_by": "ann"}
    assert cap.echo_of(SnapshotInput()) == {}


def test_entry_point_names_the_plugin_module() -> None:
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="opsagent.capabilities") if ep.name == "rucio_snapshot"]
    assert [ep.value for ep in eps] == ["opsagent_rucio_snapshot"]


@pytest.mark.parametrize(
    "raw, errors",
    [
        (
            {"campaigns": ["26.02.0", "x", "1"]},
            [
                "$.campaigns[1]: expected a campaign version like 26.02.0, got 'x'",
                "$.campaigns[2]: expected a campaign version like 26.02.0, got '1'",
            ],
        ),
        ({"campaigns": "26.02.0"}, ["$.campaigns: expected an array, got string '26.02.0'"]),
        (
            {"campaigns": []},
            ["$.campaigns: expected at least one item (leave the field out instead)"],
        ),
        ({"campaigns": [26]}, ["$.campaigns[0]: expected a string, got number 26"]),
        ({"created_by": 7}, ["$.created_by: expected a string, got number 7"]),
    ],
)
def test_input_errors_name_the_field(raw: dict, errors: list[str]) -> None:
    with pytest.raises(InputError) as caught:
        structure(raw, SnapshotInput)
    assert caught.value.errors == errors


def test_input_is_all_optional() -> None:
    assert structure({}, SnapshotInput) == SnapshotInput()
    assert structure({"campaigns": ["26.02.0", "25.12.0"]}, SnapshotInput).campaigns == [
        "26.02.0",
        "25.12.0",
    ]


def test_config_defaults_and_errors() -> None:
    cfg = config_from_table(plugin.CAPABILITY, {})
    assert cfg.parallel == 16 and cfg.stages == ["RECO", "FULL"] and cfg.scope == "epic"
    assert cfg.rucio_tls_verify is None  # no default: a choice to make
    with pytest.raises(ConfigError, match=r"rucio_snapshot_update\.parallel: expected 1 to 256"):
        config_from_table(plugin.CAPABILITY, {"parallel": 0})
    with pytest.raises(ConfigError, match="rucio_ca_bundle is set but rucio_tls_verify is false"):
        config_from_table(
            plugin.CAPABILITY, {"rucio_tls_verify": False, "rucio_ca_bundle": "/ca.pem"}
        )
    with pytest.raises(ConfigError, match=r"stages\[0\]: expected a stage name"):
        config_from_table(plugin.CAPABILITY, {"stages": ["reco"]})
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_table(plugin.CAPABILITY, {"rucio_verify": True})


def test_tls_is_an_explicit_choice_for_https() -> None:
    assert tls_choice("rucio", "http://127.0.0.1:8080", None, None)[0] is True
    with pytest.raises(JobFailed) as caught:
        tls_choice("rucio", "https://rucio.example:443", None, None)
    assert "rucio_tls_verify = true" in caught.value.reason
    assert "rucio_tls_verify = false" in caught.value.reason
    verify, sentence = tls_choice("rucio", "https://rucio.example", False, None)
    assert verify is False and "verification is OFF" in sentence
    assert tls_choice("catalogue", "https://pcs", True, "/etc/ca.pem")[0] == "/etc/ca.pem"
    assert tls_choice("catalogue", "https://pcs", True, None)[0] is True


def test_atomic_write_leaves_a_whole_world_readable_file(tmp_path: Path) -> None:
    path = cachefiles.snapshot_path(tmp_path, "26.02.0")
    cachefiles.write_json_atomic(path, {"a": 1})
    cachefiles.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o2775 == 0o2775
    assert os.listdir(path.parent) == ["current-26.02.0.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = cachefiles.snapshot_path(tmp_path, "26.02.0")
    cachefiles.write_json_atomic(path, {"old": True})

    def broken_replace(*_a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cachefiles.os, "replace", broken_replace)
    with pytest.raises(OSError):
        cachefiles.write_json_atomic(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(path.parent) == ["current-26.02.0.json"]


def test_time_format_is_the_deployed_one() -> None:
    import re

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000", cachefiles.now())
