"""A missing, expired or malformed operator token makes the capability unavailable at once:
a clear reason, no prun, no request anywhere, no prompt, no wait, the file untouched."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from opsagent import JobFailed
from opsagent.testing import structure
from opsagent_submit_task import SubmitInput
from opsagent_submit_task.submit import submit
from opsagent_submit_task.token import TokenUnavailable, load
from submit_task_fakes import FakeCatalogue, FakePanda
from submit_task_support import TASK, OperatorToken, b64, make_config, make_job, token_file_bytes


def _submit_expecting_unavailable(
    pcs: FakeCatalogue, panda: FakePanda, token: Path | None, cache: Path
) -> str:
    job = make_job(cache, token, make_config(pcs, panda))
    started = time.monotonic()
    with pytest.raises(JobFailed) as info:
        submit(structure({"task_name": TASK}, SubmitInput), job)
    assert time.monotonic() - started < 1.0
    assert panda.server.requests == []
    assert pcs.server.requests == []
    assert info.value.reason.startswith("submit_task is unavailable: ")
    return info.value.reason


def test_missing_token_file(
    pcs: FakeCatalogue, panda: FakePanda, tmp_path: Path, cache: Path
) -> None:
    reason = _submit_expecting_unavailable(pcs, panda, tmp_path / "nowhere" / ".token", cache)
    assert "does not exist" in reason and "device login" in reason


def test_token_not_configured(pcs: FakeCatalogue, panda: FakePanda, cache: Path) -> None:
    reason = _submit_expecting_unavailable(pcs, panda, None, cache)
    assert "panda_oidc_token" in reason


@pytest.mark.parametrize(
    ("exp_in", "expected"),
    [
        (-60, "expired at"),
        (200, "a submission needs 331 s"),  # prun 30 + grace 1 + panda-client's 300
    ],
)
def test_expired_or_soon_expiring_token(
    exp_in: float,
    expected: str,
    pcs: FakeCatalogue,
    panda: FakePanda,
    operator_token: OperatorToken,
    cache: Path,
) -> None:
    operator_token.rewrite(*token_file_bytes(exp_in=exp_in))
    reason = _submit_expecting_unavailable(pcs, panda, operator_token.path, cache)
    assert expected in reason
    assert "UTC" in reason and "pbook" in reason


JWT_HEAD = b64({"alg": "RS256"})
MALFORMED = [
    (b"", "is empty"),
    (b"eyJhbGciOi.not-json", "not panda-client's token file"),
    (b'{"access_token": "x"}', "has no id_token"),
    (json.dumps({"id_token": "only.two"}).encode(), "not a JWT"),
    (json.dumps({"id_token": f"{JWT_HEAD}.%%%.sig"}).encode(), "cannot be decoded"),
    (
        json.dumps(
            {"id_token": f"{JWT_HEAD}.{b64({'name': 'a', 'preferred_username': 'b'})}.s"}
        ).encode(),
        "no numeric exp",
    ),
    (
        json.dumps({"id_token": f"{JWT_HEAD}.{b64({'exp': 4102444800, 'name': 'a'})}.s"}).encode(),
        "lacks preferred_username",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_token(
    raw: bytes,
    expected: str,
    pcs: FakeCatalogue,
    panda: FakePanda,
    operator_token: OperatorToken,
    cache: Path,
) -> None:
    operator_token.rewrite(raw, "-")
    reason = _submit_expecting_unavailable(pcs, panda, operator_token.path, cache)
    assert expected in reason


def test_the_token_never_appears_in_its_own_description(operator_token: OperatorToken) -> None:
    from opsagent import Credential

    token = load(Credential("panda_oidc_token", path=operator_token.path))
    assert operator_token.id_token not in repr(token)
    assert operator_token.id_token in token.secrets
    with pytest.raises(TokenUnavailable) as info:
        token.check(needed=10 * 86400)
    assert operator_token.id_token not in str(info.value)
