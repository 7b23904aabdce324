{%- set creds = cookiecutter.credentials.split(",") | map("trim") | select | list if cookiecutter.needs_credentials else [] -%}
"""The work of ``{{ cookiecutter.msg_type }}``: a plain function of the input and the job.

It runs the same way in the host (in a process of its own, killed at the time limit),
from ``opsagent do {{ cookiecutter.msg_type }}`` and from a test.  Raise ``JobFailed`` with
a reason a person can act on; return ``Outcome.ok(...)`` with what the event should carry.
A request can be delivered again after a crash, so doing it twice must be harmless.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from opsagent import Job, {% if creds %}JobFailed, {% endif %}Outcome

if TYPE_CHECKING:
    from {{ cookiecutter.__package }} import {{ cookiecutter.__class }}Input


def {{ cookiecutter.msg_type }}(inp: {{ cookiecutter.__class }}Input, job: Job) -> Outcome:
    """Record ``inp.target`` under the cache; replace the body with the real work."""
{%- if creds %}
    # job.credential(name).read() is the secret: hand it to the service this calls, and
    # never put it in a log line, an event or a command line.
    for name in ({% for c in creds %}{{ c | tojson }}{% if not loop.last %}, {% endif %}{% endfor %}{% if creds | length == 1 %},{% endif %}):
        if not job.credential(name).read():
            raise JobFailed(f"credential {name} is empty: {job.credential(name)!r}")
{%- endif %}
    result = job.cache_dir / job.msg_type / f"{inp.target}.json"
    if inp.dry_run:
        return Outcome.ok(would_write=str(result))
    if result.exists():
        return Outcome.ok(result=str(result), changed=False)
    record = {"target": inp.target, "job_id": job.id}
    result.parent.mkdir(parents=True, exist_ok=True)
    partial = result.with_name(f".{result.name}.{os.getpid()}")
    partial.write_text(json.dumps(record))
    partial.replace(result)  # whole or not at all, even if the job is killed midway
    job.log.info("recorded {}", inp.target)
    return Outcome.ok(result=str(result), changed=True)
