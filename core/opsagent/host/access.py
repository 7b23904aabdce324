"""Who may ask: each capability's allow-list of broker users.

A request body's ``sender`` is whatever the caller wrote; only the broker knows who
connected.  ActiveMQ Classic stamps the authenticated user on every message as
``JMSXUserID`` (``populateJMSXUserID="true"``, overwriting what a client set), Artemis
as ``_AMQ_VALIDATED_USER`` (``populate-validated-user``), which a STOMP client receives
as ``JMSXUserID`` too; the transport reads the header its broker stamps and hands it
over as :attr:`Delivery.user`.

``[capability.<msg_type>] allow_users = ["webtier", ...]`` limits a capability to those
users; ``["*"]`` opens it to anyone who can write to the queue.  With nothing configured
a capability is open -- except ``shutdown`` and ``prune_cache``, which only the host's
own broker user (``[broker] user``) may ask for: one stops the host for good, the other
deletes the cache.  Where a list applies and the broker stamped no user, the request is
refused (fail closed): an unstamped message could come from anyone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

#: ``allow_users`` entry that opens a capability to every broker user.
ANYONE = "*"
#: Capabilities only the host's own broker user may call unless configured otherwise.
HOST_ONLY = ("shutdown", "prune_cache")
#: The key in a ``[capability.<msg_type>]`` table.
KEY = "allow_users"


class AccessError(ValueError):
    """An ``allow_users`` value the host refuses to start with."""


def _users(msg_type: str, value: Any) -> frozenset[str] | None:
    if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
        raise AccessError(
            f"capability.{msg_type}.{KEY}: expected a list of broker user names "
            f'(or ["{ANYONE}"] for anyone), got {value!r}'
        )
    if ANYONE in value:
        if len(value) > 1:
            raise AccessError(
                f'capability.{msg_type}.{KEY}: "{ANYONE}" opens it to anyone; '
                f"list no other names beside it"
            )
        return None
    return frozenset(value)


@attrs.frozen
class Access:
    """The allow-list of each capability; ``None`` (or absent): anyone may call it."""

    allowed: Mapping[str, frozenset[str] | None] = attrs.Factory(dict)

    @classmethod
    def from_tables(
        cls,
        tables: Mapping[str, Mapping[str, Any]],
        msg_types: Iterable[str],
        host_user: str | None,
    ) -> Access:
        """From the raw ``[capability.*]`` tables, for the capabilities ``msg_types``."""
        allowed: dict[str, frozenset[str] | None] = {}
        for msg_type in msg_types:
            table = tables.get(msg_type, {})
            if KEY in table:
                allowed[msg_type] = _users(msg_type, table[KEY])
            elif msg_type in HOST_ONLY:
                # No broker user configured: nobody, until allow_users says who.
                allowed[msg_type] = frozenset([host_user] if host_user else [])
        return cls(allowed)

    def refusal(self, msg_type: str, user: str | None) -> str | None:
        """Why ``user`` may not call ``msg_type``, or ``None`` when it may."""
        users = self.allowed.get(msg_type)
        if users is None:
            return None
        if user is None:
            return (
                f"forbidden: {msg_type} is limited to some broker users and the broker did not "
                f"say who sent this request (no validated user on the message); refused rather "
                f"than trusted -- the broker must stamp the sender (see docs/operations.md)"
            )
        if user not in users:
            return f"forbidden: broker user {user!r} may not call {msg_type}"
        return None

    def open_to_anyone(self, msg_types: Iterable[str]) -> list[str]:
        """The capabilities among ``msg_types`` that any broker user may call."""
        return sorted(m for m in msg_types if self.allowed.get(m) is None)

    def describe(self, msg_type: str) -> str:
        """``anyone``, ``nobody`` or the allowed users, for ``opsagent plugins``/selftest."""
        users = self.allowed.get(msg_type)
        if users is None:
            return "anyone"
        return ", ".join(sorted(users)) if users else "nobody"
