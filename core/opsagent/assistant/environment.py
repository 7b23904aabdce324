"""The MCP server's environment: only what it needs, no credential.

An assistant starts its MCP servers from its own environment, which may well hold the
operator's ``X509_USER_PROXY``, a PanDA token path, ``SWF_API_TOKEN`` or the host's
``ACTIVEMQ_PASSWORD``.  Removing them from ``os.environ`` is not enough: the kernel
keeps the environment a process was started with (``/proc/<pid>/environ``), and so does
its memory.  So ``opsagent mcp`` starts itself again (``execve``) with an allow-list of
variables; its own broker password, when it came from the environment, is handed over
through a pipe and never appears in the new environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

#: Variables the MCP server keeps; every other one is dropped at start.
ENV_ALLOW = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "OPSAGENT_CONFIG",
    "OPSAGENT_MCP_BROKER_USER",
    "ACTIVEMQ_HOST",
    "ACTIVEMQ_PORT",
    # Not a secret: lets `opsagent mcp` refuse to log in as the host's user.
    "ACTIVEMQ_USER",
    "ACTIVEMQ_USE_SSL",
    "ACTIVEMQ_SSL_CA_CERTS",
    "EPICPROD_OPS_QUEUE",
)
#: Set in the re-started process: the environment is already clean.
CLEAN = "OPSAGENT_MCP_CLEAN"
#: The descriptor the re-started process reads its broker password from.
PASSWORD_FD = "OPSAGENT_MCP_PASSWORD_FD"  # noqa: S105 - a variable name
PASSWORD = "OPSAGENT_MCP_BROKER_PASSWORD"  # noqa: S105 - a variable name


def clean(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` the MCP server keeps."""
    return {k: environ[k] for k in ENV_ALLOW if k in environ}


def restart_clean(argv: list[str]) -> str | None:
    """Start this command again with a clean environment, unless it already has one.

    Returns only in the re-started process: the broker password taken out of its pipe
    (``None`` when the environment had none), which the caller keeps in memory only.
    """
    if os.environ.get(CLEAN) == "1":
        fd = os.environ.pop(PASSWORD_FD, None)
        os.environ.pop(CLEAN, None)
        if fd is None:
            return None
        with os.fdopen(int(fd), "rb") as pipe:
            return pipe.read().decode()
    env = clean(os.environ)
    env[CLEAN] = "1"
    password = os.environ.get(PASSWORD)
    if password:
        read, write = os.pipe()
        # The pipe holds it until the new process reads it (a pipe buffer is 64 KiB).
        os.write(write, password.encode())
        os.close(write)
        os.set_inheritable(read, True)
        env[PASSWORD_FD] = str(read)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "opsagent.cli.main", *argv], env)  # noqa: S606 - no shell, a fixed argv
    raise AssertionError("unreachable")  # pragma: no cover - execve does not return
