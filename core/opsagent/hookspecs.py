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

PROJECT = "opsagent"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_capabilities(register: Callable[[Capability], None]) -> None:
    """Called once at start-up; call ``register(Capability(...))`` for each capability.

    Every implementation is called; nothing is returned.
    """
