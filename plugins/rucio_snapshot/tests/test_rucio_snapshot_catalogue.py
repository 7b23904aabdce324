"""The catalogue client against a fake PCS: what is retried, how often, and for how long."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opsagent.testing import FakeServer, Response, hang
from opsagent_rucio_snapshot.catalogue import Catalogue, CatalogueError

CAMPAIGNS = "/pcs/api/campaigns/"
TASK = "/pcs/api/prod-tasks/<name>/"


@pytest.fixture
def pcs() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


def client(pcs: FakeServer, **kw: object) -> tuple[Catalogue, list[float]]:
    waits: list[float] = []
    return Catalogue(pcs.url, sleep=waits.append, **kw), waits  # type: ignore[arg-type]


def test_503_is_tried_three_times_with_doubling_waits_then_names_the_request(
    pcs: FakeServer,
) -> None:
    pcs.route("GET", CAMPAIGNS, Response.unavailable("down for maintenance"))
    cat, waits = client(pcs)
    with pytest.raises(CatalogueError) as caught:
        cat.campaigns()
    assert str(caught.value) == (
        f'GET {pcs.url}{CAMPAIGNS}: HTTP 503 {{"detail": "down for maintenance"}} after 3 tries'
    )
    assert len(pcs.requests_to("GET", CAMPAIGNS)) == 3
    assert waits == [1.0, 2.0]


def test_a_transient_failure_then_an_answer_succeeds(pcs: FakeServer) -> None:
    answers = iter([Response.unavailable(), Response(502), [{"version": "26.02.0"}]])
    pcs.route("GET", CAMPAIGNS, lambda _r: next(answers))
    cat, waits = client(pcs)
    assert cat.campaigns() == [{"version": "26.02.0"}]
    assert waits == [1.0, 2.0] and cat.down is None


def test_retry_after_is_honoured_up_to_a_cap(pcs: FakeServer) -> None:
    answers = iter(
        [Response(503, b"", {"Retry-After": "7"}), Response(429, b"", {"Retry-After": "3600"}), []]
    )
    pcs.route("GET", CAMPAIGNS, lambda _r: next(answers))
    cat, waits = client(pcs)
    assert cat.campaigns() == []
    assert waits == [7.0, 30.0]


@pytest.mark.parametrize("status", [400, 403, 404, 500])
def test_an_answer_that_another_try_cannot_fix_is_not_retried(pcs: FakeServer, status: int) -> None:
    pcs.route("GET", CAMPAIGNS, Response.json({"detail": "no"}, status))
    cat, waits = client(pcs)
    with pytest.raises(CatalogueError, match=f"HTTP {status} "):
        cat.campaigns()
    assert len(pcs.requests_to("GET", CAMPAIGNS)) == 1 and waits == []
    assert cat.down is None


def test_a_hanging_catalogue_costs_at_most_the_bound_then_later_calls_fail_at_once(
    pcs: FakeServer,
) -> None:
    pcs.route("GET", CAMPAIGNS, hang)
    pcs.route("PATCH", TASK, {"name": "t"})
    cat = Catalogue(pcs.url, timeout=0.3, tries=2, backoff=0.1)
    assert cat.bound() == pytest.approx(0.7)
    started = time.monotonic()
    with pytest.raises(CatalogueError) as caught:
        cat.campaigns()
    took = time.monotonic() - started
    assert 0.7 <= took < 0.7 + 1.0
    assert str(caught.value).startswith(f"GET {pcs.url}{CAMPAIGNS}: ReadTimeout: ")
    assert str(caught.value).endswith(" after 2 tries")
    assert len(pcs.requests_to("GET", CAMPAIGNS)) == 2

    started = time.monotonic()
    for name in ("a", "b", "c"):
        with pytest.raises(CatalogueError, match="not tried, the catalogue is down"):
            cat.replace_outputs({"name": name}, [])
    assert time.monotonic() - started < 0.1
    assert [r for r in pcs.requests if r.method == "PATCH"] == []


def test_a_refused_connection_is_retried(pcs: FakeServer) -> None:
    url = pcs.url
    pcs.close()  # nothing listens on the port any more
    waits: list[float] = []
    cat = Catalogue(url, sleep=waits.append)
    with pytest.raises(CatalogueError, match=r": ConnectionError: .* after 3 tries$"):
        cat.campaigns()
    assert waits == [1.0, 2.0]


def test_a_patch_answered_503_is_retried_with_the_same_body(pcs: FakeServer) -> None:
    answers = iter([Response.unavailable(), {"name": "t"}])
    pcs.route("PATCH", TASK, lambda _r: next(answers))
    cat, _ = client(pcs)
    cat.replace_outputs({"name": "t", "overrides": {"n": 1}}, [{"did": "epic:/x"}])
    bodies = [r.json() for r in pcs.requests if r.method == "PATCH"]
    assert bodies == [{"overrides": {"n": 1, "outputs": [{"did": "epic:/x"}]}}] * 2
