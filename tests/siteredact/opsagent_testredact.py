"""Capabilities for the redaction and log-line tests (a dist-info on PYTHONPATH, like
``tests/sitecaps``): a secret config field, secrets nobody declared, and text from the
request logged as it came."""

from __future__ import annotations

import sys

import attrs
from opsagent import Capability, Job, JobFailed, Outcome, hookimpl, pattern


@attrs.frozen
class LoginConfig:
    username: str = "ruciouser"
    # What opsagent.secret() declares, spelt out.
    password: str = attrs.field(default="", repr=False, metadata={"secret": True})
    #: Secrets nobody declared, which the doer puts where a failing client would: in a
    #: URL's userinfo, a Basic header, after Bearer, in authz= and sig=, in a token header.
    undeclared: list[str] = attrs.Factory(list)


@attrs.frozen
class LoginInput:
    how: str


def login(inp: LoginInput, job: Job) -> Outcome:
    cfg = job.config
    if inp.how == "declared":
        job.log.warning("login failed for {}/{}", cfg.username, cfg.password)
        print(f"stderr: login failed for {cfg.username}/{cfg.password}", file=sys.stderr)
        raise JobFailed(f"login failed for {cfg.username}/{cfg.password}")
    userinfo, basic, bearer, authz, sig, header = cfg.undeclared
    said = (
        f"GET https://{cfg.username}:{userinfo}@rucio.example/auth answered 401; "
        f"sent {{'Authorization': 'Basic {basic}'}}, then Bearer {bearer}; "
        f"xrdcp root://eos.example//a.tar?authz={authz}&sig={sig} failed; "
        f"X-Rucio-Auth-Token: {header}"
    )
    if inp.how == "undeclared":
        job.log.warning("the service said: {}", said)
        print(f"stderr: {said}", file=sys.stderr)
        return Outcome.error(f"login failed: {said}", said=[said])
    if inp.how == "raise":
        raise RuntimeError(said)
    raise JobFailed(f"unknown how {inp.how!r}")


@attrs.frozen
class TextInput:
    text: str
    how: str = "log"
    word: str = attrs.field(default="w", validator=pattern(r"[a-z]+", "a word"))


def log_input(inp: TextInput, job: Job) -> Outcome:
    """Logs its input as it came; fails with it in the reason or the exception."""
    job.log.info("input: {}", inp.text)
    if inp.how == "fail":
        raise JobFailed(f"refused: {inp.text}")
    if inp.how == "raise":
        raise ValueError(f"bad input: {inp.text}")
    return Outcome.ok()


def _events(name: str) -> dict[str, str]:
    return {"ok": f"{name}_done", "error": f"{name}_failed"}


@hookimpl
def register_capabilities(register):
    for isolation in ("thread", "process"):
        register(
            Capability(
                msg_type=f"test_login_{isolation}",
                input=LoginInput,
                doer=login,
                config=LoginConfig,
                isolation=isolation,
                events=_events("test_login"),
                echo=lambda inp: {"how": inp.how},
            )
        )
        register(
            Capability(
                msg_type=f"test_log_input_{isolation}",
                input=TextInput,
                doer=log_input,
                isolation=isolation,
                events=_events("test_log_input"),
            )
        )
