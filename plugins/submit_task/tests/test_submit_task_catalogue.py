"""The catalogue client: what counts as an answer, what is retried, what is refused."""

from __future__ import annotations

import socket
import time

import pytest
from opsagent.testing import FakeServer, Response, hang
from opsagent_submit_task.catalogue import (
    MAX_COMMAND_BYTES,
    Catalogue,
    CatalogueError,
    record_with_retries,
)
from submit_task_fakes import FakeCatalogue

COMMAND_PATH = "/pcs/api/prod-tasks/command/"


def test_the_command_is_utf8_unless_the_catalogue_says_otherwise() -> None:
    with FakeCatalogue() as pcs:
        pcs.add_task("t", 'prun --exec "echo Zürich" --outDS user.x.t')
        assert "Zürich" in Catalogue(pcs.url, 2).command("t")
        (req,) = pcs.requests("GET", COMMAND_PATH)
        assert req.query == {"name": ["t"], "fmt": ["panda"]}
    with FakeServer() as server:
        server.route(
            "GET",
            COMMAND_PATH,
            Response(
                200, "prun é".encode("latin-1"), {"Content-Type": "text/plain; charset=latin-1"}
            ),
        )
        assert Catalogue(server.url, 2).command("t") == "prun é"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response.json({"detail": "No task named 't'"}, 404), "HTTP 404: No task named 't'"),
        (Response.json({"cmd": "prun"}), "expected text/plain, got application/json"),
        (Response(200, b"prun \xff", {"Content-Type": "text/plain"}), "not valid utf-8"),
        (Response.text("x" * (MAX_COMMAND_BYTES + 1)), f"longer than {MAX_COMMAND_BYTES}"),
        (Response(302, b"", {"Location": "/login/"}), "HTTP 302"),
    ],
)
def test_anything_but_a_plain_text_command_is_a_failure(answer: Response, error: str) -> None:
    with FakeServer() as server:
        server.route("GET", COMMAND_PATH, answer)
        with pytest.raises(CatalogueError, match=error):
            Catalogue(server.url, 2).command("t")


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), (12, 12), ("12", 12)])
def test_the_existing_id_is_read_from_the_task_record(value: object, expected: int | None) -> None:
    with FakeServer() as server:
        server.route("GET", "/pcs/api/prod-tasks/<name>/", {"name": "t", "panda_task_id": value})
        assert Catalogue(server.url, 2).panda_task_id("t") == expected


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response.json({"name": "t"}), "no panda_task_id field"),
        (Response.json({"panda_task_id": "12; drop"}), "not an id"),
        (Response.json({"panda_task_id": True}), "not an id"),
        (Response.text("<html>"), "not JSON"),
        (Response.json({"detail": "x"}, 404), "no task named 't'"),
        (Response.unavailable(), "HTTP 503"),
    ],
)
def test_an_unclear_task_record_is_a_failure(answer: Response, error: str) -> None:
    with FakeServer() as server:
        server.route("GET", "/pcs/api/prod-tasks/<name>/", answer)
        with pytest.raises(CatalogueError, match=error):
            Catalogue(server.url, 2).panda_task_id("t")


def test_a_task_name_is_one_url_segment() -> None:
    with FakeServer() as server:
        server.route("GET", "/pcs/api/prod-tasks/<name>/", lambda r: {"panda_task_id": None})
        Catalogue(server.url, 2).panda_task_id("a.b+c")
        assert server.requests[0].path == "/pcs/api/prod-tasks/a.b%2Bc/"


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (500, True),
        (502, True),
        (503, True),
        (429, True),
        (400, False),
        (403, False),
        (404, False),
        (409, False),
    ],
)
def test_which_record_failures_are_retried(status: int, retry: bool) -> None:
    with FakeServer() as server:
        server.route(
            "POST",
            "/pcs/api/prod-tasks/record-submission/",
            Response.json({"detail": "no"}, status),
        )
        with pytest.raises(CatalogueError) as info:
            Catalogue(server.url, 2).record("t", 5)
        assert info.value.retry is retry and info.value.status == status


def test_no_answer_and_no_server_are_retried() -> None:
    with FakeServer() as server:
        server.route("POST", "/pcs/api/prod-tasks/record-submission/", hang)
        started = time.monotonic()
        with pytest.raises(CatalogueError, match=r"no answer .* within 0.3 s") as info:
            Catalogue(server.url, 0.3).record("t", 5)
        assert info.value.retry and time.monotonic() - started < 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(CatalogueError, match="cannot reach") as info:
        Catalogue(f"http://127.0.0.1:{port}", 1).record("t", 5)
    assert info.value.retry


def test_retries_stop_at_success_or_at_a_failure_retrying_cannot_fix() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky(outcomes: list[CatalogueError | None]):  # type: ignore[no-untyped-def]
        def record() -> None:
            calls.append(1)
            outcome = outcomes.pop(0)
            if outcome is not None:
                raise outcome

        return record

    busy = CatalogueError("busy", status=503, retry=True)
    conflict = CatalogueError("conflict", status=409)
    assert record_with_retries(flaky([busy, None]), [1.0, 2.0], sleep=slept.append) == []
    assert (len(calls), slept) == (2, [1.0])
    calls.clear(), slept.clear()
    assert record_with_retries(flaky([busy, busy, busy]), [1.0, 2.0], sleep=slept.append) == [
        busy,
        busy,
        busy,
    ]
    assert (len(calls), slept) == (3, [1.0, 2.0])
    calls.clear(), slept.clear()
    assert record_with_retries(flaky([conflict]), [1.0, 2.0], sleep=slept.append) == [conflict]
    assert (len(calls), slept) == (1, [])


def test_secrets_go_in_headers_only() -> None:
    with FakeServer() as server:
        server.route(
            "POST",
            "/pcs/api/prod-tasks/record-submission/",
            Response.json({"detail": "Invalid token."}, 401),
        )
        with pytest.raises(CatalogueError) as info:
            Catalogue(server.url, 2, owner="alice", token="s3cret").record("t", 5)
        (req,) = server.requests
        assert req.header("Authorization") == "Token s3cret"
        assert req.header("X-Remote-User") == "alice"
        assert "s3cret" not in str(info.value) and "s3cret" not in req.path
        assert "s3cret" not in repr(Catalogue(server.url, 2, token="s3cret"))
