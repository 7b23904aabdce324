"""FakeMattermost answers as a Mattermost server's incoming webhooks do."""

from __future__ import annotations

import json

import pytest
import requests
from opsagent.testing import FakeMattermost

APP_ERROR_KEYS = {"id", "message", "detailed_error", "request_id", "status_code"}


@pytest.fixture
def mm():
    with FakeMattermost() as server:
        yield server


def test_a_post_is_made_and_answered_ok(mm):
    url = mm.hook("ops")
    assert mm.hook("ops") == url and url.startswith(f"{mm.url}/hooks/")
    assert len(url.rsplit("/", 1)[1]) == 26
    body = {"text": "hi", "username": "bot", "channel": "town-square",
            "icon_url": "https://example.org/i.png",
            "attachments": [{"fallback": "f", "color": "#fff", "fields": []}]}
    answer = requests.post(url, json=body, timeout=5)
    assert (answer.status_code, answer.text) == (200, "ok")
    assert answer.headers["Content-Type"].startswith("text/plain")
    # Slack's form encoding, no Content-Type: the body is payload=<json>.
    answer = requests.post(url, data={"payload": json.dumps({"attachments": [{"text": "a"}]})},
                           timeout=5)
    assert answer.text == "ok"
    assert mm.posts("ops") == [body, {"attachments": [{"text": "a"}]}]


@pytest.mark.parametrize(("body", "error_id"), [
    (b"{not json", "web.incoming_webhook.parse.app_error"),
    (b'{"username": "bot"}', "web.incoming_webhook.text.app_error"),
    (b'{"text": "x", "attachments": {"a": 1}}', "web.incoming_webhook.parse.app_error"),
    (b'{"text": "' + b"x" * 16384 + b'"}', "web.incoming_webhook.text.length.app_error"),
])
def test_a_bad_payload_is_refused_with_mattermosts_error(mm, body, error_id):
    answer = requests.post(mm.hook("ops"), data=body,
                           headers={"Content-Type": "application/json"}, timeout=5)
    assert answer.status_code == 400
    doc = answer.json()
    assert set(doc) == APP_ERROR_KEYS and doc["id"] == error_id and doc["status_code"] == 400
    assert mm.posts("ops") == []


def test_an_unknown_hook_a_disabled_one_a_limit_and_an_outage(mm):
    mm.hook("ops")
    answer = requests.post(f"{mm.url}/hooks/nosuchhook", json={"text": "x"}, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["id"] == "web.incoming_webhook.invalid.app_error"
    url = mm.hook("ops")
    mm.set("ops", "disabled")
    answer = requests.post(url, json={"text": "x"}, timeout=5)
    assert answer.status_code == 403 and set(answer.json()) == APP_ERROR_KEYS
    mm.set("ops", "rate_limited", retry_after=7)
    answer = requests.post(url, json={"text": "x"}, timeout=5)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    mm.set("ops", "down")
    assert requests.post(url, json={"text": "x"}, timeout=5).status_code == 503
    mm.set("ops", "hang")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(url, json={"text": "x"}, timeout=0.3)
    with pytest.raises(ValueError, match="mode 'gone'"):
        mm.set("ops", "gone")
    assert mm.posts("ops") == []
    assert len(mm.requests) == 5
