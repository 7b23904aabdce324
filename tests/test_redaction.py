"""Redaction: what counts as a secret, and how it is scrubbed from outcomes and log records."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

from loguru import logger
from opsagent.outcome import Outcome
from opsagent.redaction import MASK, Redactor, ScrubbedStream

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
