"""opsagent: a plugin-based host for credentialed production operations."""

from opsagent.capability import Capability
from opsagent.chain import Chain, Step
from opsagent.checks import Check
from opsagent.credential import Credential
from opsagent.credential_check import CredentialError, check_credential
from opsagent.hookspecs import hookimpl
from opsagent.isolation.proc import Completed, run
from opsagent.job import Job
from opsagent.outcome import JobFailed, Notice, Outcome
from opsagent.private import PrivateDir
from opsagent.program import Program, arg, derive_reason, flag, option
from opsagent.retries import doubling, retried
from opsagent.rucio_login import rucio_client
from opsagent.schema import (
    Digits,
    FieldError,
    between,
    http_url,
    pattern,
    positive,
    secret,
    shown,
)
from opsagent.setting import from_env

__all__ = [
    "Capability",
    "Chain",
    "Check",
    "Completed",
    "Credential",
    "CredentialError",
    "Digits",
    "FieldError",
    "Job",
    "JobFailed",
    "Notice",
    "Outcome",
    "Step",
    "PrivateDir",
    "Program",
    "arg",
    "between",
    "check_credential",
    "derive_reason",
    "doubling",
    "flag",
    "from_env",
    "hookimpl",
    "http_url",
    "option",
    "pattern",
    "positive",
    "retried",
    "rucio_client",
    "run",
    "secret",
    "shown",
]
__version__ = "0.1.0"
