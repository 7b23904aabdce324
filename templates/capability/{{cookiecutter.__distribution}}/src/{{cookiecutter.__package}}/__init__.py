{%- set creds = cookiecutter.credentials.split(",") | map("trim") | select | list if cookiecutter.needs_credentials else [] -%}
"""Capability ``{{ cookiecutter.msg_type }}``.

The declaration below is the whole contract with the host: the message that runs it,
the input it takes, how long a job may take, the credentials it is given and the events
that end it.  The work is the function of the same name in ``work.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from opsagent import Capability, hookimpl, pattern

from {{ cookiecutter.__package }} import work

__version__ = "0.1.0"

#: A name, never a path: a letter or digit, then also ``. _ -``.
TARGET = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
{%- if creds %}
#: The credentials a job is given (each configured as ``[credentials.<name>]`` on the host).
CREDENTIALS = ({% for c in creds %}{{ c | tojson }}{% if not loop.last %}, {% endif %}{% endfor %}{% if creds | length == 1 %},{% endif %})
{%- endif %}


@attrs.frozen
class {{ cookiecutter.__class }}Input:
    """The fields of a request; other keys of the message are ignored."""

    target: str = attrs.field(
        validator=pattern(TARGET, "a name (letters, digits, . _ -)"),
        metadata={"description": "what to work on"},
    )
    dry_run: bool = attrs.field(
        default=False,
        metadata={"description": "say what would be done and do nothing"},
    )


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(
        Capability(
            msg_type={{ cookiecutter.msg_type | tojson }},
            input={{ cookiecutter.__class }}Input,
            doer=work.{{ cookiecutter.msg_type }},
            events={
                "ok": "{{ cookiecutter.msg_type }}_done",
                "error": "{{ cookiecutter.msg_type }}_failed",
                "timeout": "{{ cookiecutter.msg_type }}_failed",
            },
            time_limit={{ cookiecutter.time_limit | trim }},
{%- if creds %}
            credentials=CREDENTIALS,
{%- endif %}
            # Every event of a job carries these, even when it failed or timed out.
            echo=lambda inp: {"target": inp.target},
            # Two jobs for one target never run at once.
            dedup_key=lambda inp: inp.target,
            isolation="process",
            description={{ cookiecutter.description | tojson }},
            samples=({"target": "example"}, {"target": "example", "dry_run": True}),
        )
    )
