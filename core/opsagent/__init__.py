"""opsagent: a plugin-based host for credentialed production operations."""

from opsagent.capability import Capability
from opsagent.credentials.redaction import secret
from opsagent.hookspecs import hookimpl
from opsagent.job import Job
from opsagent.outcome import JobFailed, Outcome
from opsagent.private import PrivateDir
from opsagent.schema import Digits, pattern

__all__ = [
    "Capability",
    "Digits",
    "Job",
    "JobFailed",
    "Outcome",
    "PrivateDir",
    "hookimpl",
    "pattern",
    "secret",
]
__version__ = "0.1.0"
