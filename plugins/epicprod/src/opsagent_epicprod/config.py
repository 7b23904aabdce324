"""``[epicprod]``: where the web tier's doers are, shared by every epicprod capability.

A capability's own ``[capability.<msg_type>]`` table may set any of these too (it wins).
"""

from __future__ import annotations

import attrs


@attrs.frozen
class EpicprodConfig:
    """The web tier's checkout and interpreter, and the old agent's tunables."""

    #: The web tier's checkout (``swf-monitor``): the doers' working directory, where
    #: ``scripts/*.py`` and ``src/manage.py`` are.
    monitor_root: str = ""
    #: The interpreter of the web tier's virtual environment (Django and its settings).
    python: str = "python3"
    #: ``association_sweep``'s ``--days`` when a request gives none
    #: (the old agent's ``EPICPROD_ASSOCIATION_SWEEP_DAYS``).
    association_sweep_days: int = attrs.field(default=14, validator=attrs.validators.ge(1))
