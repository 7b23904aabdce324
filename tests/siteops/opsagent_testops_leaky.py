"""A plugin that, when told to, fails to import with a secret in its error (for the
sentinel test); otherwise it offers nothing."""

from __future__ import annotations

import os

_var = os.environ.get("OPSAGENT_TEST_LEAKY_PLUGIN_VAR")
if _var:
    raise RuntimeError(f"cannot log in to the catalogue with password {os.environ.get(_var)}")
