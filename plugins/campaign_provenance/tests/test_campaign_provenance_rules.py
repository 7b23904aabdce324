"""The declaration, the input, the join rules and the cache file, without Rucio."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import opsagent_campaign_provenance as plugin
import pytest
from opsagent import Capability
from opsagent.testing import ConfigError, InputError, config_from_table, structure
from opsagent_campaign_provenance import CAPABILITY, ProvenanceInput
from opsagent_campaign_provenance.cachefile import (
    CacheRefused,
    provenance_path,
    write_if_changed,
)
from opsagent_campaign_provenance.provenance import (
    Assignment,
    dataset_entry,
    path_entry,
    status_of,
)
from opsagent_campaign_provenance.requested import Requested, Selection, check_row, requests_of

RSES = ("BNL-XRD", "EIC-XRD")
EVGEN = "/volatile/eic/EPIC/EVGEN/"


def test_registers_one_capability_with_its_event_and_action() -> None:
    got: list[Capability] = []
    plugin.register_capabilities(register=got.append)
    [cap] = got
    assert cap.msg_type == "campaign_provenance_sweep"
    assert {cap.event_for(s) for s in ("ok", "error", "timeout", "skipped")} == {"provenance_ready"}
    assert cap.action == "provenance_sweep"
    assert cap.credentials == ("rucio_userpass",)
    assert cap.isolation == "process" and cap.concurrency == 1
    assert cap.key_of(ProvenanceInput()) == cap.key_of(ProvenanceInput(campaign="26.02.0"))
    for sample in cap.samples:
        structure(dict(sample), cap.input)
    assert cap.echo_of(ProvenanceInput(campaign="26.02.0", created_by="ann")) == {
        "campaign": "26.02.0",
        "created_by": "ann",
    }


def test_entry_point_names_the_plugin_module() -> None:
    from importlib.metadata import entry_points

    eps = [
        e for e in entry_points(group="opsagent.capabilities") if e.name == "campaign_provenance"
    ]
    assert [e.value for e in eps] == ["opsagent_campaign_provenance"]


@pytest.mark.parametrize(
    "raw, error",
    [
        (
            {"campaign": "../etc"},
            "$.campaign: expected a campaign version like 26.02.0, got '../etc'",
        ),
        ({"path_filter": "DIS/../.."}, "$.path_filter: expected whole segments of an EVGEN path"),
        ({"path_filter": "/DIS"}, "$.path_filter: expected whole segments"),
        ({"path_filter": "DIS/*"}, "$.path_filter: expected whole segments"),
        ({"path_filter": "DIS/"}, "$.path_filter: expected whole segments"),
        ({"path_filter": "-o/tmp/x"}, "$.path_filter: expected whole segments"),
        ({"detector_configs": []}, "$.detector_configs: expected at least one item"),
        (
            {"detector_configs": ["epic_craterlake", "../x"]},
            "$.detector_configs[1]: expected a detector configuration like epic_craterlake",
        ),
    ],
)
def test_bad_input_is_refused_with_where_and_what(raw: dict[str, Any], error: str) -> None:
    with pytest.raises(InputError) as caught:
        structure(raw, ProvenanceInput)
    assert error in str(caught.value)


def test_config_checks_rses_and_limits() -> None:
    cfg = config_from_table(CAPABILITY, {})
    assert (cfg.rses, cfg.stage, cfg.parallel) == (["BNL-XRD", "EIC-XRD"], "RECO", 16)
    assert cfg.max_datasets == 200_000
    for table, error in (
        ({"rses": ["../x"]}, "rses"),
        ({"rses": []}, "rses"),
        ({"parallel": 0}, "parallel"),
        ({"stage": "reco/.."}, "stage"),
        ({"max_datasets": 0}, "max_datasets"),
    ):
        with pytest.raises(ConfigError, match=error):
            config_from_table(CAPABILITY, table)


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"input_path": EVGEN + "DIS/../../x", "detector_config": "c"}, "the suffix must be"),
        ({"input_path": EVGEN + "DIS/./x", "detector_config": "c"}, "the suffix must be"),
        ({"input_path": EVGEN, "detector_config": "c"}, "the suffix must be"),
        ({"input_path": EVGEN + "a b", "detector_config": "c"}, "the suffix must be"),
        ({"input_path": EVGEN + "DIS/_%", "detector_config": "c"}, "the suffix must be"),
        ({"input_path": "/volatile/eic/EPIC/EVGENX/a", "detector_config": "c"}, "expected /vol"),
        ({"input_path": ["x"], "detector_config": "c"}, "expected /volatile"),
        ({"input_path": EVGEN + "a", "detector_config": ".hidden"}, "detector_config '.hidden'"),
        ({"input_path": EVGEN + "a", "detector_config": "a/b"}, "detector_config 'a/b'"),
    ],
)
def test_a_hostile_catalogue_row_is_rejected_with_a_reason(row: dict[str, Any], reason) -> None:
    checked = check_row(row)
    assert isinstance(checked, str) and reason in checked


def test_rows_are_checked_selected_and_joined() -> None:
    rows = [
        {"input_path": EVGEN + "DIS/NC/18x275/minQ2=10", "detector_config": "a"},
        {"input_path": EVGEN + "DIS/NC/18x275/minQ2=10", "detector_config": "a"},  # again
        {"input_path": EVGEN + "DIS/NC/18x275/minQ2=10", "detector_config": "b"},
        {"input_path": EVGEN + "DIS/NCX/1", "detector_config": "a"},
        {"input_path": EVGEN + "..", "detector_config": "a"},
    ]
    found, rejected = requests_of(rows, Selection(frozenset({"a"}), "DIS/NC"))
    assert found == [Requested("a", "DIS/NC/18x275/minQ2=10")]  # not DIS/NCX: whole segments
    assert rejected == [
        "row 4: input_path '/volatile/eic/EPIC/EVGEN/..': the suffix must be segments of "
        "A-Z a-z 0-9 . _ = + -, none empty, '.' or '..'"
    ]
    assert found[0].input_path == EVGEN + "DIS/NC/18x275/minQ2=10"


def test_a_dataset_joins_the_request_with_the_longest_whole_segment_prefix() -> None:
    prefix = "/RECO/26.02.0/"
    a = Assignment.empty([Requested("c", "DIS/NC"), Requested("c", "DIS/NC/18x275")])
    for name in (
        "/RECO/26.02.0/c/DIS/NC/18x275/part2",  # the longer request
        "/RECO/26.02.0/c/DIS/NC/18x275",
        "/RECO/26.02.0/c/DIS/NC/5x41",  # the shorter one
        "/RECO/26.02.0/c/DIS/NC",
        "/RECO/26.02.0/c/DIS/NCX",  # a string prefix is not a segment prefix
        "/RECO/26.02.0/d/DIS/NC",  # another detector configuration
        "/RECO/26.02.0/c",
    ):
        assert a.place(name, prefix, Selection())
    assert a.requested[Requested("c", "DIS/NC/18x275")] == [
        "/RECO/26.02.0/c/DIS/NC/18x275/part2",
        "/RECO/26.02.0/c/DIS/NC/18x275",
    ]
    assert a.requested[Requested("c", "DIS/NC")] == [
        "/RECO/26.02.0/c/DIS/NC/5x41",
        "/RECO/26.02.0/c/DIS/NC",
    ]
    assert a.unexpected == ["/RECO/26.02.0/c/DIS/NCX", "/RECO/26.02.0/d/DIS/NC", "/RECO/26.02.0/c"]
    # outside the selection: neither requested nor unexpected
    b = Assignment.empty([])
    assert not b.place("/RECO/26.02.0/d/DIS/NC", prefix, Selection(frozenset({"c"})))
    assert not b.place("/RECO/26.02.0/c/SIDIS/x", prefix, Selection(None, "DIS"))
    assert b.unexpected == []


def ds(did: str, files: Any, **at: tuple[Any, Any]) -> dict[str, Any]:
    """A snapshot-style record: ``at`` maps an RSE (``_`` for ``-``) to (available, length)."""
    return dataset_entry(
        {
            "did": did,
            "length": files,
            "bytes": None,
            "rse_replicas": [
                {"rse": r.replace("_", "-"), "available_length": n, "length": t, "state": "X"}
                for r, (n, t) in at.items()
            ],
        }
    )


def test_statuses() -> None:
    full = ds("a", 3, BNL_XRD=(3, 3), EIC_XRD=(3, 3))
    assert status_of([full], RSES) == "complete"
    assert status_of([full, ds("b", 2, BNL_XRD=(2, 2), EIC_XRD=(2, 2))], RSES) == "complete"
    assert status_of([full, ds("b", 2, BNL_XRD=(2, 2))], RSES) == "partial"
    assert status_of([ds("a", 3, BNL_XRD=(3, 3), EIC_XRD=(2, 3))], RSES) == "partial"
    assert status_of([ds("a", 3, EIC_XRD=(3, 3))], RSES) == "partial"
    assert status_of([], RSES) == "missing"
    assert status_of([ds("a", 0)], RSES) == "missing"
    assert status_of([ds("a", 3, JLAB_DISK=(3, 3))], RSES) == "missing"
    assert status_of([full, ds("b", 0)], RSES) == "partial"  # an empty dataset is not done
    # open datasets (null length): the per-RSE records are the truth
    assert status_of([ds("a", None, BNL_XRD=(3, 3), EIC_XRD=(3, 3))], RSES) == "complete"


def test_hostile_numbers_from_rucio_count_as_unknown() -> None:
    weird = ds("a", "3", BNL_XRD=(True, 3), EIC_XRD=(-1, "3"))
    assert weird["files"] == 3  # the string is not believed; the largest RSE length is
    assert [(r["files"], r["total"]) for r in weird["rses"]] == [(0, 3), (0, 0)]
    assert status_of([weird], RSES) == "missing"
    # more available than there are files does not make a path complete twice over
    over = ds("a", 2, BNL_XRD=(5, 2), EIC_XRD=(2, 2))
    assert status_of([over], RSES) == "partial"
    entry = path_entry("c", "x", [over], RSES, "partial")
    assert entry["rses"][0] == {"rse": "BNL-XRD", "files": 2, "complete": True}


def doc(n: int = 1) -> dict[str, Any]:
    return {"schema_version": 1, "campaign": "26.02.0", "counts": {"complete": n}}


def test_the_file_is_written_only_when_it_changed(tmp_path: Path) -> None:
    path = provenance_path(tmp_path / "cache", "26.02.0")
    assert write_if_changed(path, doc())[0] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o2775
    first = path.stat()
    written, at = write_if_changed(path, doc())
    assert written is False and at == json.loads(path.read_text())["generated_at"]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert write_if_changed(path, doc(2))[0] is True
    assert json.loads(path.read_text())["counts"] == {"complete": 2}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


@pytest.mark.parametrize(
    "planted",
    [
        b"not json",
        b"[1, 2]",
        b'{"schema_version": 1}',
        # the same document but no generated_at: not one this capability wrote
        json.dumps(doc()).encode(),
        # the same document padded far beyond its size: not read whole
        json.dumps({**doc(), "generated_at": "x"}).encode() + b" " * 100_000,
    ],
)
def test_a_file_planted_by_someone_else_is_replaced(tmp_path: Path, planted: bytes) -> None:
    path = provenance_path(tmp_path, "26.02.0")
    path.parent.mkdir()
    path.write_bytes(planted)
    assert write_if_changed(path, doc())[0] is True
    assert {k: v for k, v in json.loads(path.read_text()).items() if k != "generated_at"} == doc()


def test_links_are_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "provenance").symlink_to(victim)
    with pytest.raises(CacheRefused, match="a symbolic link"):
        write_if_changed(provenance_path(tmp_path / "cache", "26.02.0"), doc())
    assert list(victim.iterdir()) == []
    # a fifo planted as the file: not opened for reading in a way that blocks, replaced
    os.unlink(tmp_path / "cache" / "provenance")
    path = provenance_path(tmp_path / "cache", "26.02.0")
    path.parent.mkdir()
    os.mkfifo(path)
    assert write_if_changed(path, doc())[0] is True
    assert path.is_file()


def test_a_campaign_that_is_not_a_version_names_no_file(tmp_path: Path) -> None:
    for bad in ("../x", "26.02.0/..", "*", "26.02.0\n"):
        with pytest.raises(ValueError, match="not a campaign version"):
            provenance_path(tmp_path, bad)
