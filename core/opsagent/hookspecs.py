"""Hook specifications: what a capability package may implement.

A package exposes a module under the ``opsagent.capabilities`` entry-point group; the
module implements any of these hooks, marked with :data:`hookimpl`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from opsagent.capability import Capability
    from opsagent.checks import Check
    from opsagent.job import Job

PROJECT = "opsagent"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_capabilities(register: Callable[[Capability], None]) -> None:
    """Called once at start-up; call ``register(Capability(...))`` for each capability.

    Every implementation is called; nothing is returned.
    """


@hookspec
def capability_checks(
    capability: Capability, job: Job, register: Callable[[Check], None], live: bool
) -> None:
    """Called by ``opsagent selftest`` for each capability of this plugin module only.

    ``job`` is what the doer would get (configuration, credentials, environment);
    call ``register(Check.ok/warn/fail(name, detail))`` for each of the capability's own
    checks (its service reachable, say).  ``live`` is true under ``selftest --live``:
    then a check may also call the production service the capability acts on (PanDA),
    which a plain selftest leaves alone.  An implementation may leave ``live`` out of
    its parameters.  Nothing is returned; an exception is reported as a failed check.
    """
