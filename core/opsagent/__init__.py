"""opsagent: a plugin-based host for credentialed production operations."""

from opsagent.capability import Capability
from opsagent.checks import Check
from opsagent.credential import Credential
from opsagent.credentials.redaction import secret
from opsagent.hookspecs import hookimpl
from opsagent.isolation.proc import Completed, run
from opsagent.job import Job
from opsagent.outcome import JobFailed, Outcome
from opsagent.private import PrivateDir
from opsagent.schema import Digits, FieldError, pattern, shown

__all__ = [
    "Capability",
    "Check",
    "Completed",
    "Credential",
    "Digits",
    "FieldError",
    "Job",
    "JobFailed",
    "Outcome",
    "PrivateDir",
    "hookimpl",
    "pattern",
    "run",
    "secret",
    "shown",
]
__version__ = "0.1.0"
