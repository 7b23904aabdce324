"""Hostile and malformed bodies: each gets one clear reason, nothing crashes."""

from __future__ import annotations

import json

import attrs
import pytest
from opsagent.envelope import EnvelopeError, parse
from opsagent.schema import Digits, InputError, json_schema, pattern, structure


@pytest.mark.parametrize("raw, reason", [
    (b"\xc3\x28", "not valid UTF-8"),
    (b'{"msg_type": "x"', "not valid JSON"),
    (b'"a string"', "must be a JSON object, got str"),
    (b"null", "must be a JSON object, got NoneType"),
    (b'{"msg_type": "x", "n": ' + b"1" * 10000 + b"}", "integer of 10000 digits is too long"),
    (b"[" * 100000 + b"]" * 100000, "nested deeper than 32 levels"),
    (b'{"msg_type": "x", "v": NaN}', "JSON constant NaN is not allowed"),
    (b'{"msg_type": "x", "v": -Infinity}', "JSON constant -Infinity is not allowed"),
    (b'{"msg_type": "x", "msg_type": "y"}', "duplicate key 'msg_type'"),
    (b'{"namespace": "prodops"}', "$.msg_type: expected a non-empty string, got None"),
    (b'{"msg_type": 5}', "$.msg_type: expected a non-empty string, got 5"),
    (b'{"msg_type": "x", "reply_to": "bare"}', "$.reply_to: expected a /queue/ or /topic/"),
    (b'{"msg_type": "x", "request_id": "../../cache"}', "$.request_id: expected 1-128 letters"),
    (b'{"msg_type": "x", "request_id": ".."}', "$.request_id: expected 1-128 letters"),
    (b'{"msg_type": "x", "pad": "' + b"a" * (1 << 20) + b'"}', "over the cap of"),
])
def test_rejections(raw, reason):
    with pytest.raises(EnvelopeError) as info:
        parse(raw)
    assert reason in info.value.reason


def test_a_bad_reply_to_does_not_hide_the_msg_type():
    with pytest.raises(EnvelopeError) as info:
        parse(b'{"msg_type": "x", "reply_to": 7, "pandaid": 1}')
    assert info.value.msg_type == "x"
    assert info.value.reply_to is None


def test_good_envelope_keeps_every_field():
    env = parse(json.dumps({"msg_type": "fetch", "namespace": "prodops",
                            "reply_to": "/queue/r", "request_id": 12, "extra": [1]}).encode())
    assert (env.msg_type, env.namespace, env.reply_to, env.request_id) == (
        "fetch", "prodops", "/queue/r", "12")
    assert env.body["extra"] == [1]


@attrs.frozen
class FetchLike:
    scope: str = attrs.field(validator=pattern(r"[A-Za-z0-9_.-]{1,25}", "a Rucio scope"))
    pandaid: Digits
    force: bool = False
    campaigns: list[str] = attrs.Factory(list)


@pytest.mark.parametrize("body, errors", [
    ({"scope": "epic", "pandaid": "../../x"}, ["$.pandaid: expected digits, got '../../x'"]),
    ({"scope": "epic", "pandaid": "１２３"}, ["$.pandaid: expected digits, got '１２３'"]),
    ({"scope": "epic", "pandaid": True}, ["$.pandaid: expected digits, got True"]),
    ({"scope": "epic", "pandaid": -1}, ["$.pandaid: expected digits, got -1"]),
    ({"scope": "epic", "pandaid": 1, "force": "yes"},
     ["$.force: expected true or false, got string 'yes'"]),
    ({"scope": "epic", "pandaid": 1, "campaigns": ["a", 3]},
     ["$.campaigns[1]: expected a string, got number 3"]),
    ({"scope": ["epic"], "pandaid": 1}, ["$.scope: expected a string, got array ['epic']"]),
    ({"scope": "a;rm -rf /", "pandaid": 1},
     ["$.scope: expected a Rucio scope, got 'a;rm -rf /'"]),
    ({}, ["$.scope: required field missing", "$.pandaid: required field missing"]),
])
def test_input_errors_name_the_path(body, errors):
    with pytest.raises(InputError) as info:
        structure(body, FetchLike)
    assert info.value.errors == errors


def test_ids_come_out_as_strings_and_extra_fields_are_ignored():
    got = structure({"scope": "epic", "pandaid": 6123, "requested_by": "web", "sender": "x"},
                    FetchLike)
    assert got == FetchLike("epic", "6123")


def test_json_schema_of_an_input():
    schema = json_schema(FetchLike)
    assert schema["required"] == ["scope", "pandaid"]
    assert schema["properties"]["scope"]["pattern"] == "^(?:[A-Za-z0-9_.-]{1,25})$"
    assert schema["properties"]["pandaid"]["type"] == ["string", "integer"]
    assert schema["properties"]["force"] == {"type": "boolean", "default": False}
