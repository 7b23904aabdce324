"""Refuse answers that would generate a package the host cannot load, saying what to type."""

import math
import re
import sys

# The rules of opsagent.capability: names the host accepts for msg_types, events, credentials.
NAME = re.compile(r"[a-z][a-z0-9_]*")
CREDENTIAL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
RESERVED = {"health_ping", "shutdown"}
LONGEST_SUFFIX = len("_failed")

msg_type = {{ cookiecutter.msg_type | tojson }}
needs_credentials = {{ "True" if cookiecutter.needs_credentials else "False" }}
credentials = [c.strip() for c in {{ cookiecutter.credentials | tojson }}.split(",") if c.strip()]
time_limit = {{ cookiecutter.time_limit | tojson }}

errors = []
if not NAME.fullmatch(msg_type):
    errors.append(
        f"msg_type: expected lower_snake_case starting with a letter, got {msg_type!r}"
    )
elif len(msg_type) > 64 - LONGEST_SUFFIX:
    errors.append(
        f"msg_type: at most {64 - LONGEST_SUFFIX} characters (its events add a suffix), "
        f"got {len(msg_type)}"
    )
if msg_type in RESERVED:
    errors.append(f"msg_type: {msg_type!r} is reserved for the host")
if needs_credentials:
    if not credentials:
        errors.append("credentials: give at least one name, or answer no to needs_credentials")
    for name in credentials:
        if not CREDENTIAL.fullmatch(name):
            errors.append(
                f"credentials: {name!r} is not a credential name "
                "(a letter, then letters, digits, . _ -; at most 64)"
            )
try:
    limit = float(time_limit)
except ValueError:
    limit = 0.0
if not (limit > 0 and math.isfinite(limit)):
    errors.append(f"time_limit: expected a positive number of seconds, got {time_limit!r}")

if errors:
    for error in errors:
        print(f"opsagent template: {error}", file=sys.stderr)
    sys.exit(1)
