"""Hostile and malformed bodies: each gets one clear reason, nothing crashes."""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opsagent.host.envelope import EnvelopeError, parse
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
    # Numbers that float() turns into infinity, and float literals of any length.
    (b'{"msg_type": "x", "v": 1e999}', "number 1e999 is out of range (it would be inf)"),
    (b'{"msg_type": "x", "v": [-1.5E+400]}', "number -1.5E+400 is out of range"),
    (b'{"msg_type": "x", "v": 1.' + b"7" * 100_000 + b"}",
     "number of 100002 characters is too long (at most 64)"),
    (b'{"msg_type": "x", "v": 0.' + b"0" * 100 + b"1}", "number of 103 characters is too long"),
    # Lone UTF-16 surrogates, which no UTF-8 encoder downstream can write.
    (b'{"msg_type": "x", "text": "\\ud800"}', "$.text: a lone UTF-16 surrogate"),
    (b'{"msg_type": "x", "text": "a\\uDFFFb"}', "$.text: a lone UTF-16 surrogate"),
    (b'{"msg_type": "x", "v": [1, {"w": "\\udc00\\ud800"}]}',
     "$.v[1].w: a lone UTF-16 surrogate"),
    (b'{"msg_type": "x", "k\\ud800": 1}', "$: key 'k\\ud800': a lone UTF-16 surrogate"),
    (b'{"msg_type": "\\ud83d"}', "$.msg_type: a lone UTF-16 surrogate"),
    (b'"\\ud800"', "$: a lone UTF-16 surrogate"),
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


def test_a_lone_surrogate_in_a_str_body_is_refused_too():
    with pytest.raises(EnvelopeError) as info:
        parse('{"msg_type": "x", "text": "\ud800"}')
    assert "$.text: a lone UTF-16 surrogate" in info.value.reason


def test_what_looks_like_a_surrogate_but_is_not_one_is_kept():
    env = parse(b'{"msg_type": "x", "pair": "\\ud83d\\ude00", "text": "\\\\ud800",'
                b' "small": 1e-999, "n": 2.5e3}')
    assert env.body["pair"] == "\U0001f600"
    assert env.body["text"] == "\\ud800", "an escaped backslash, then text"
    assert (env.body["small"], env.body["n"]) == (0.0, 2500.0)


_number = st.from_regex(r"-?(0|[1-9][0-9]{0,400})(\.[0-9]{1,400})?([eE][+-]?[0-9]{1,5})?",
                        fullmatch=True)
_escapes = st.lists(st.integers(0, 0xFFFF), max_size=6).map(
    lambda units: "".join(f"\\u{u:04x}" for u in units))


@given(number=_number, escapes=_escapes, in_key=st.booleans())
def test_whatever_is_accepted_can_be_written_again_as_strict_utf8_json(number, escapes,
                                                                       in_key):
    """The host re-encodes bodies (journal, events, logs): nothing the envelope accepts
    may fail there or change into something JSON cannot carry (inf)."""
    field = f'"{escapes}": 1' if in_key else f'"text": "{escapes}"'
    raw = f'{{"msg_type": "x", "v": {number}, {field}}}'.encode()
    try:
        env = parse(raw)
    except EnvelopeError as exc:
        assert "out of range" in exc.reason or "too long" in exc.reason or (
            "lone UTF-16 surrogate" in exc.reason) or "duplicate key" in exc.reason, exc.reason
        return
    json.dumps(env.body, allow_nan=False, ensure_ascii=False).encode("utf-8")


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
