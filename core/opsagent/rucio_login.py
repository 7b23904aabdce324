"""A Rucio client whose login token is private to the job.

rucio-clients keeps its login token under ``$TMPDIR/.rucio_<user>/``, keyed by account
only, so two jobs -- or two servers, or a password and a proxy login of one account --
would share one token file.  :func:`rucio_client` points the token file into a directory
the caller owns (``job.private_dir()``, or a temporary one), and nothing else.

rucio-clients is imported when a client is made: opsagent does not depend on it, each
capability that talks to Rucio declares it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["rucio_client"]

#: The token files' names inside the directory given.
TOKEN_FILE = "auth_token"  # noqa: S105 - a file name, not a secret


def rucio_client(
    token_dir: str | os.PathLike[str], *, request_retries: int | None = None, **settings: Any
) -> Any:
    """A ``rucio.client.Client`` (every client API) made with ``settings``, whose login
    token lives in ``token_dir``.

    ``settings`` are the Client's own (``rucio_host``, ``auth_host``, ``account``,
    ``auth_type``, ``creds``, ``ca_cert``, ``timeout``, ``vo``, ``user_agent``); for a
    password login, ``auth_type="userpass"`` and ``creds={"username": ..., "password":
    job.credential(...).read()}``.  ``request_retries`` replaces the client's own number
    of tries of each request (its default is 3).  Raises what the Client raises when it
    cannot log in (``rucio.common.exception.RucioException``, ``OSError``).
    """
    from rucio.client import Client

    directory = os.fspath(token_dir)
    token = os.path.join(directory, TOKEN_FILE)

    class PrivateTokenClient(Client):  # type: ignore[misc]
        # rucio-clients' own hook for where the token is kept (a configured
        # auth_token_file_path would otherwise be shared by every client of the process).
        def _get_auth_tokens(self) -> tuple[str, str, str, str]:
            return token, token + "_exp", token, directory

    if request_retries is not None:
        PrivateTokenClient.REQUEST_RETRIES = request_retries
    client = PrivateTokenClient(**settings)
    if request_retries is not None:
        client.request_retries = request_retries
    return client
