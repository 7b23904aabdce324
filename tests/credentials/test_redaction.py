"""Redaction: what counts as a secret, and how it is scrubbed from outcomes and log records."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import attrs
import opsagent
import pytest
from loguru import logger
from opsagent.credentials.redaction import MASK, Redactor, ScrubbedStream, declared_secrets
from opsagent.outcome import Outcome
from opsagent.reporting import logs

TOKEN = "id-token-0123456789abcdef.payload"
REFRESH = "refresh-token-fedcba9876543210"


def test_a_secret_its_lines_json_strings_and_url_encoding_are_scrubbed():
    token_file = json.dumps({"id_token": TOKEN, "refresh_token": REFRESH, "token_type": "Bearer"})
    r = Redactor([token_file, "p@ss/word+x"])
    assert r.scrub(f"Authorization: Bearer {TOKEN}") == f"Authorization: Bearer {MASK}"
    assert r.scrub(f"refresh={REFRESH};") == f"refresh={MASK};"
    assert r.scrub("https://u:" + quote("p@ss/word+x", safe="") + "@h/") == f"https://u:{MASK}@h/"
    assert r.scrub(token_file) == MASK
    # Short pieces of a secret (here "Bearer") are left alone: they are ordinary words.
    assert r.scrub("Bearer") == "Bearer"


def test_short_values_are_not_scrubbed_and_nothing_known_changes_nothing():
    r = Redactor(["abc", ""])
    assert not r.active
    outcome = Outcome.error("abc failed", k="abc")
    assert r.outcome(outcome) is outcome


def test_outcomes_are_scrubbed_in_reason_and_nested_data():
    r = Redactor(["s3cret-value-123"])
    outcome = Outcome.error("401: s3cret-value-123", a=["x", {"b": "s3cret-value-123"}])
    clean = r.outcome(outcome)
    assert clean.reason == f"401: {MASK}"
    assert clean.data == {"a": ["x", {"b": MASK}]}
    assert clean.status == "error"
    untouched = Outcome.ok(n=1)
    assert r.outcome(untouched) is untouched


def test_a_notices_title_and_detail_are_scrubbed_and_the_notice_kept():
    r = Redactor(["s3cret-value-123"])
    notice = opsagent.Notice(source="s", severity="warning", title="failed (s3cret-value-123)",
                             url="/logs/", dedup_key="k", detail="token s3cret-value-123")
    clean = r.outcome(Outcome("error", "r", {}, (), (notice,)))
    assert [(n.title, n.detail) for n in clean.notices] == [
        (f"failed ({MASK})", f"token {MASK}")]
    kept = Outcome("ok", None, {}, (), (attrs.evolve(notice, title="t", detail=""),))
    assert r.outcome(kept) is kept


def test_log_records_and_tracebacks_are_scrubbed():
    r = Redactor(["s3cret-value-123"])
    out = io.StringIO()
    sink = logger.add(out, format="{message} {extra}", diagnose=False, backtrace=False)
    try:
        r.install()
        logger.bind(header="Bearer s3cret-value-123").warning("token {}", "s3cret-value-123")
        try:
            raise RuntimeError("refused s3cret-value-123")
        except RuntimeError:
            logger.opt(exception=True).error("call failed")
        try:
            raise KeyError("plain")
        except KeyError:
            logger.opt(exception=True).error("no secret here")
    finally:
        logger.remove(sink)
        Redactor().install()
    text = out.getvalue()
    assert "s3cret-value-123" not in text
    assert f"token {MASK}" in text and f"Bearer {MASK}" in text
    assert f"RuntimeError: refused {MASK}" in text  # the traceback is kept, scrubbed
    assert "KeyError: 'plain'" in text


def test_a_scrubbed_stream_passes_everything_else_through():
    r = Redactor(["s3cret-value-123"])
    raw = io.StringIO()
    stream = ScrubbedStream(raw, r)
    print("value s3cret-value-123 and more", file=stream)
    assert raw.getvalue() == f"value {MASK} and more\n"


# -- secrets nobody declared: caught by their shape --------------------------------------

SHAPES = [
    (
        "login to https://ruciouser:S3cret%2Fx@rucio.example:443/auth failed",
        f"login to https://ruciouser:{MASK}@rucio.example:443/auth failed",
    ),
    ("root://u:p@ss@eos.example//f", f"root://u:{MASK}@eos.example//f"),
    ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {MASK}"),
    (
        "{'Authorization': 'Token abcdef123', 'Accept': '*/*'}",
        f"{{'Authorization': 'Token {MASK}', 'Accept': '*/*'}}",
    ),
    ('{"authorization": "rawtoken123"}', f'{{"authorization": "{MASK}"}}'),
    ("X-Rucio-Auth-Token: ruciotok-0123", f"X-Rucio-Auth-Token: {MASK}"),
    ("401 for Bearer eyJhbGciOi.eyJzdWIi.c2ln from svc", f"401 for Bearer {MASK} from svc"),
    (
        "root://eos.example//f.tar?authz=Bearer%20eyJ0eXAi.abc&other=1",
        f"root://eos.example//f.tar?authz={MASK}&other=1",
    ),
    (
        "https://s3/x?X-Amz-Algorithm=AWS4&X-Amz-Signature=abc0123&X-Amz-Date=1",
        f"https://s3/x?X-Amz-Algorithm=AWS4&X-Amz-Signature={MASK}&X-Amz-Date=1",
    ),
    ("https://blob/x?sv=2020&sig=abc%2Bdef%3D&se=1", f"https://blob/x?sv=2020&sig={MASK}&se=1"),
    (
        "GET /api?access_token=ya29.a0Af, then token=abc",
        f"GET /api?access_token={MASK}, then token={MASK}",
    ),
]


@pytest.mark.parametrize(("text", "scrubbed"), SHAPES)
def test_secrets_nobody_declared_are_masked_by_their_shape(text, scrubbed):
    r = Redactor()
    assert r.scrub(text) == scrubbed
    assert r.scrub(scrubbed) == scrubbed  # masking again changes nothing
    assert Redactor(["S3cret%2Fx"]).scrub(text) == scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "job r1 ended ok in 0.001 s",
        "https://host:8443/path@version and root://eos.example//a/b?x=1",
        "the bearer token expired; Bearer authentication refused",
        "key=value mytoken=kept tokens=kept",
        "authorization failed for the request",
    ],
)
def test_ordinary_text_that_resembles_a_shape_is_left_alone(text):
    assert Redactor().scrub(text) == text


def test_a_redactor_without_secrets_still_scrubs_outcomes_by_shape():
    r = Redactor()
    assert not r.active
    outcome = Outcome.error("xrdcp root://eos//f?authz=zz9 failed", url="https://u:pw123@h/x")
    clean = r.outcome(outcome)
    assert clean.reason == f"xrdcp root://eos//f?authz={MASK} failed"
    assert clean.data == {"url": f"https://u:{MASK}@h/x"}


# -- secret config fields: declared, found ------------------------------------------------


@attrs.frozen
class Inner:
    key: str = opsagent.secret()
    label: str = "kept"


@attrs.frozen
class SiteConfig:
    username: str = ""
    password: str = opsagent.secret()
    tokens: list[str] = opsagent.secret(factory=list)
    api_key: str = attrs.field(default="", metadata={"secret": True})
    inner: Inner = attrs.Factory(Inner)


def test_secret_config_fields_are_found_in_a_table_and_in_an_instance():
    table = {
        "username": "ruciouser",
        "password": "S3cret-pw",
        "tokens": ["tok-1234567"],
        "api_key": "key-7654321",
    }
    assert sorted(declared_secrets(SiteConfig, table)) == [
        "S3cret-pw",
        "key-7654321",
        "tok-1234567",
    ]
    cfg = SiteConfig(**table, inner=Inner(key="inner-key-1"))
    assert sorted(declared_secrets(SiteConfig, cfg)) == [
        "S3cret-pw",
        "inner-key-1",
        "key-7654321",
        "tok-1234567",
    ]
    assert "S3cret-pw" not in repr(cfg)
    assert declared_secrets(None, {}) == []
    r = Redactor()
    r.learn(*declared_secrets(SiteConfig, cfg))
    assert r.scrub("login failed for ruciouser/S3cret-pw") == f"login failed for ruciouser/{MASK}"


def test_the_bundled_capabilities_declare_their_secret_config_fields():
    from opsagent_fetch_payload_log.config import FetchConfig

    assert declared_secrets(FetchConfig, {"username": "u", "password": "S3cret-pw"}) == [
        "S3cret-pw"
    ]


# -- one record, one line ------------------------------------------------------------------

PAYLOAD = (
    "start\n2026-01-01 00:00:00.000 INFO    job 77 ended ok (forged line)"
    "\r\x1b[2K\x1b]0;title\x07\x7f\x85nel\u2028ls\u2029ps\u202eevil\tend"
)


def _logged(json_lines: bool = False) -> tuple[str, list]:
    out = io.StringIO()
    sink = logger.add(
        out, serialize=json_lines, format=logs.FORMAT, diagnose=False, backtrace=False
    )
    try:
        Redactor(["s3cret-value-123"]).install()
        logger.bind(who=PAYLOAD).warning("shutdown requested: {}", PAYLOAD)
        try:
            raise ValueError(f"bad input {PAYLOAD} s3cret-value-123")
        except ValueError:
            logger.opt(exception=True).error("job failed: {}", PAYLOAD)
        try:
            raise KeyError("plain")
        except KeyError:
            logger.opt(exception=True).error("host's own traceback")
    finally:
        logger.remove(sink)
        Redactor().install()
    return out.getvalue(), out.getvalue().splitlines()


def test_a_log_record_is_one_line_whatever_its_values_hold():
    text, lines = _logged()
    escaped = logs.one_line(PAYLOAD)
    assert escaped == (
        "start\\n2026-01-01 00:00:00.000 INFO    job 77 ended ok (forged line)"
        "\\r\\x1b[2K\\x1b]0;title\\x07\\x7f\\x85nel\\u2028ls\\u2029ps\\u202eevil"
        "\\tend"
    )
    # splitlines() breaks at every line boundary a reader or a parser may see.
    assert all(("forged line" in line) == ("start" in line) for line in lines), lines
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert f"shutdown requested: {escaped}" in text
    # The host's tracebacks stay readable; only the exception's own message is escaped.
    assert "Traceback (most recent call last):" in text
    assert f"ValueError: bad input {escaped} {MASK}" in lines
    assert "KeyError: 'plain'" in lines
    assert "s3cret-value-123" not in text


def test_a_json_log_record_is_one_line_whatever_its_values_hold():
    text, lines = _logged(json_lines=True)
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    assert records[0]["record"]["message"] == f"shutdown requested: {logs.one_line(PAYLOAD)}"
    assert records[0]["record"]["extra"]["who"] == logs.one_line(PAYLOAD)
    assert "KeyError: 'plain'" in records[2]["text"]
    assert "s3cret-value-123" not in text
