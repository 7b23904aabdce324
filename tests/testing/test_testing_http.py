"""opsagent.testing.http: a loopback HTTP fake that records, routes, fails and hangs."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from opsagent.testing.http import FakeServer, Response, hang


def test_routes_by_method_and_path_with_segment_parameters() -> None:
    with FakeServer() as server:

        @server.route("GET", "/items/<name>/")
        def item(req):  # type: ignore[no-untyped-def]
            return {"name": req.params["name"], "q": req.arg("q")}

        server.route("POST", "/items/", Response.text("made", status=201))

        got = requests.get(f"{server.url}/items/a.b/", params={"q": "1"}, timeout=5)
        assert got.json() == {"name": "a.b", "q": "1"}
        made = requests.post(f"{server.url}/items/", timeout=5)
        assert (made.status_code, made.text) == (201, "made")
        assert made.headers["Content-Type"].startswith("text/plain")
        missing = requests.delete(f"{server.url}/items/", timeout=5)
        assert missing.status_code == 404 and "no route" in missing.json()["detail"]
        assert requests.get(f"{server.url}/items/a/b/", timeout=5).status_code == 404


def test_segment_parameters_reach_the_handler_decoded() -> None:
    # A Rucio DID as a path segment: the client encodes ':' and '/', the handler sees them.
    with FakeServer() as server:
        server.route("GET", "/dids/<scope>/<name>", lambda req: dict(req.params))
        got = requests.get(f"{server.url}/dids/user.a%20b/file%3A1%2Flog.tgz", timeout=5)
        assert got.json() == {"scope": "user.a b", "name": "file:1/log.tgz"}
    # The request log keeps the path as it was sent.
    assert [r.path for r in server.requests] == ["/dids/user.a%20b/file%3A1%2Flog.tgz"]


def test_every_request_is_recorded_with_what_was_sent() -> None:
    with FakeServer() as server:
        server.route("POST", "/j", lambda req: req.json())
        requests.post(
            f"{server.url}/j?x=1&x=2",
            json={"k": [1]},
            headers={"X-Remote-User": "alice"},
            timeout=5,
        )
        requests.post(f"{server.url}/nowhere", data={"a": "b"}, timeout=5)
        requests.post(f"{server.url}/nowhere", files={"file": ("f.tgz", b"\x00\x01")}, timeout=5)
    first, form, multipart = server.requests
    assert first.method == "POST" and first.path == "/j"
    assert first.query == {"x": ["1", "2"]}
    assert first.header("x-remote-user") == "alice"
    assert first.json() == {"k": [1]}
    assert first.client == "127.0.0.1" and first.received > 0
    assert form.form() == {"a": "b"}
    assert multipart.files() == {"file": ("f.tgz", b"\x00\x01")}
    assert server.requests_to("POST", "/nowhere") == [form, multipart]


def test_a_later_route_replaces_the_earlier_one_and_failures_are_easy() -> None:
    with FakeServer() as server:
        server.route("GET", "/x", {"v": 1})
        assert requests.get(f"{server.url}/x", timeout=5).json() == {"v": 1}
        server.route("GET", "/x", Response.unavailable())
        got = requests.get(f"{server.url}/x", timeout=5)
        assert got.status_code == 503 and got.json() == {"detail": "service unavailable"}


def test_a_handler_that_raises_answers_500_and_keeps_the_exception() -> None:
    with FakeServer() as server:

        def broken(_req):  # type: ignore[no-untyped-def]
            raise KeyError("jedi_task_id")

        server.route("POST", "/r", broken)
        got = requests.post(f"{server.url}/r", timeout=5)
        assert got.status_code == 500 and "KeyError" in got.json()["detail"]
        assert isinstance(server.errors[0], KeyError)


def test_a_hanging_handler_makes_the_client_time_out_and_close_releases_it() -> None:
    server = FakeServer().start()
    server.route("GET", "/slow", hang)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(f"{server.url}/slow", timeout=0.3)
    assert time.monotonic() - started < 2
    assert len(server.requests_to("GET", "/slow")) == 1  # recorded although unanswered
    url = server.url
    before = threading.active_count()
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 2
    time.sleep(0.1)
    assert threading.active_count() < before  # the hung handler thread has ended
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/slow", timeout=0.5)  # the port is closed


def test_each_server_gets_its_own_free_port_on_loopback() -> None:
    with FakeServer() as a, FakeServer() as b:
        assert a.port != b.port
        assert a.url.startswith("http://127.0.0.1:")
