"""Every fault of an input or a config table is named by its path, all in one rejection,
whichever way the capability wrote its checks (a pattern, attrs' validators, a plain
ValueError, a FieldError)."""

from __future__ import annotations

import attrs
import pytest
from opsagent import Capability, FieldError, Outcome, pattern
from opsagent.testing import ConfigError, InputError, config_from_table, structure


@attrs.frozen
class Lookup:
    scope: str = attrs.field(validator=pattern(r"[a-z][a-z0-9_.-]*", "a Rucio scope"))
    name: str = attrs.field(validator=pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a DID name"))
    limit: int = 10


def _not_negative(_inst: object, attr: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError("expected 0 or more seconds")


def _known_site(_inst: object, attr: attrs.Attribute, value: str) -> None:
    if value not in ("BNL", "JLAB"):
        raise FieldError(attr.name, f"expected BNL or JLAB, got {value!r}")


@attrs.frozen
class Settings:
    timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    backoff: float = attrs.field(default=1.0, validator=_not_negative)
    tries: int = attrs.field(default=3, validator=[attrs.validators.ge(1), attrs.validators.le(9)])
    site: str = attrs.field(default="BNL", validator=_known_site)
    mode: str = attrs.field(default="fast", validator=attrs.validators.in_(("fast", "safe")))
    retry_on: list[str] = attrs.Factory(list)


def faults(obj: dict, cls: type) -> list[str]:
    with pytest.raises(InputError) as caught:
        structure(obj, cls)
    return caught.value.errors


def test_every_pattern_fault_is_reported_not_only_the_first() -> None:
    assert faults({"scope": "dx lab", "name": "../x"}, Lookup) == [
        "$.scope: expected a Rucio scope, got 'dx lab'",
        "$.name: expected a DID name, got '../x'",
    ]


def test_a_type_fault_does_not_hide_a_validator_fault_of_another_field() -> None:
    assert faults({"scope": 3, "name": "../x", "limit": "ten"}, Lookup) == [
        "$.scope: expected a string, got number 3",
        "$.name: expected a DID name, got '../x'",
        "$.limit: expected an integer, got string 'ten'",
    ]
    assert faults({"name": "../x"}, Lookup) == [
        "$.scope: required field missing",
        "$.name: expected a DID name, got '../x'",
    ]


def test_attrs_validators_and_plain_errors_are_named_by_their_field() -> None:
    bad = {"timeout": 0, "backoff": -1, "tries": 12, "site": "CERN", "mode": "slow"}
    assert faults(bad, Settings) == [
        "$.timeout: must be > 0: 0.0",
        "$.backoff: expected 0 or more seconds",
        "$.tries: must be <= 9: 12",
        "$.site: expected BNL or JLAB, got 'CERN'",
        "$.mode: must be in ('fast', 'safe') (got 'slow')",
    ]
    assert faults({"timeout": 0, "retry_on": "x"}, Settings) == [
        "$.timeout: must be > 0: 0.0",
        "$.retry_on: expected an array, got string 'x'",
    ]


def test_a_nested_object_is_named_by_its_whole_path() -> None:
    @attrs.frozen
    class Outer:
        lookups: list[Lookup]

    got = faults(
        {"lookups": [{"scope": "ok", "name": "fine"}, {"scope": "A B", "name": "/"}]}, Outer
    )
    assert got == [
        "$.lookups[1].scope: expected a Rucio scope, got 'A B'",
        "$.lookups[1].name: expected a DID name, got '/'",
    ]


def test_good_input_still_structures_and_validators_still_guard_construction() -> None:
    assert structure({"scope": "user.ann", "name": "x.1"}, Lookup) == Lookup("user.ann", "x.1")
    with pytest.raises(ValueError, match="must be > 0"):
        Settings(timeout=0)


def test_a_config_table_reports_every_key_by_its_capability_path() -> None:
    cap = Capability(
        msg_type="dataset_lookup",
        input=Lookup,
        doer=lambda inp, job: Outcome.ok(),
        events={"ok": "dataset_found", "error": "dataset_lookup_failed"},
        config=Settings,
    )
    assert config_from_table(cap, {"timeout": 5.0}) == Settings(timeout=5.0)
    with pytest.raises(ConfigError) as caught:
        config_from_table(cap, {"timeout": 0.0, "tries": 0})
    assert "capability.dataset_lookup.timeout: must be > 0: 0.0" in str(caught.value)
    assert "capability.dataset_lookup.tries: must be >= 1: 0" in str(caught.value)
