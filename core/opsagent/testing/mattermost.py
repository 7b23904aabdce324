"""A Mattermost server's incoming webhooks, on loopback, for tests of notifications.

Speaks the contract of ``POST /hooks/<key>`` as Mattermost does: a JSON body (or, with
no ``Content-Type``, a form field ``payload=<json>``) with ``text``, ``username``,
``channel``, ``icon_url``, ``icon_emoji``, ``attachments``, ``props``...; ``200`` with
the body ``ok`` (``text/plain``) when the post is made; ``400`` with Mattermost's JSON
error (``id``, ``message``, ``detailed_error``, ``request_id``, ``status_code``) for a
body that is not JSON, a post with neither ``text`` nor ``attachments``, or an unknown
hook.  A test switches a hook to what a real server does when it is not well:
``disabled`` (``403``: the hook is disabled or its channel locked), ``rate_limited``
(``429`` with ``Retry-After`` and the ``X-RateLimit-*`` headers), ``down`` (``503``),
``hang`` (never answers)::

    with FakeMattermost() as mm:
        url = mm.hook("ops")              # http://127.0.0.1:<port>/hooks/<key>
        mm.set("ops", "down")             # every post answered 503 until set back
        ...
        mm.set("ops", "ok")
        assert mm.posts("ops")[0]["text"].startswith(":white_check_mark:")

Only the posts a real server would have made are in :meth:`posts`; every request,
refused or not, is in ``requests`` as with any :class:`FakeServer`.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from opsagent.testing.http import FakeServer, Request, Response, hang

#: What a hook can be set to.
MODES = ("ok", "disabled", "rate_limited", "down", "hang")
#: Mattermost's longest post, in characters (a longer text is refused here; the real
#: server splits it).
MAX_TEXT = 16383


def app_error(error_id: str, message: str, status: int, detail: str = "") -> Response:
    """Mattermost's error body (``model.AppError`` as JSON)."""
    return Response.json(
        {
            "id": error_id,
            "message": message,
            "detailed_error": detail,
            "request_id": secrets.token_hex(13),
            "status_code": status,
        },
        status=status,
    )


class FakeMattermost(FakeServer):
    """Incoming webhooks by name; see the module's docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: dict[str, str] = {}  # key -> name
        self._modes: dict[str, str] = {}
        self._retry_after: dict[str, int] = {}
        self._posts: dict[str, list[dict[str, Any]]] = {}
        self._state = threading.Lock()
        #: Called with the hook's name and the body of each post made, before ``ok`` is
        #: answered: a test can act at that moment (kill the poster, say).
        self.on_post: Callable[[str, dict[str, Any]], None] | None = None
        self.route("POST", "/hooks/<key>", self._incoming)

    def hook(self, name: str) -> str:
        """Create the hook ``name`` (once) and return its URL (a secret, as in Mattermost)."""
        with self._state:
            for key, known in self._hooks.items():
                if known == name:
                    return f"{self.url}/hooks/{key}"
            key = secrets.token_hex(13)  # 26 characters, as Mattermost's ids
            self._hooks[key] = name
            self._modes[name] = "ok"
            self._posts[name] = []
        return f"{self.url}/hooks/{key}"

    def set(self, name: str, mode: str, *, retry_after: int = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        with self._state:
            self._modes[name] = mode
            self._retry_after[name] = retry_after

    def posts(self, name: str) -> list[dict[str, Any]]:
        """The bodies posted to hook ``name`` that a real server would have shown."""
        with self._state:
            return list(self._posts.get(name, []))

    def _incoming(self, request: Request) -> Any:
        with self._state:
            name = self._hooks.get(request.params["key"])
            mode = self._modes.get(name or "", "ok")
            wait = self._retry_after.get(name or "", 1)
        if mode == "hang":
            return hang(request)
        if mode == "down":
            return Response.text("502 Bad Gateway", 503)
        if mode == "rate_limited":
            return Response(
                429,
                b"limit exceeded\n",
                {
                    "Content-Type": "text/plain; charset=utf-8",
                    "Retry-After": str(wait),
                    "X-RateLimit-Limit": "10",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(wait),
                },
            )
        payload = self._payload(request)
        if isinstance(payload, Response):
            return payload
        if name is None:
            return app_error("web.incoming_webhook.invalid.app_error", "Invalid webhook.", 400)
        if mode == "disabled":
            return app_error(
                "web.incoming_webhook.disabled.app_error",
                "Incoming webhooks have been disabled by the system admin.",
                403,
            )
        text = payload.get("text")
        if not text and not payload.get("attachments"):
            return app_error("web.incoming_webhook.text.app_error", "No text specified.", 400)
        if not isinstance(text or "", str) or len(text or "") > MAX_TEXT:
            return app_error(
                "web.incoming_webhook.text.length.app_error",
                f"Text is too long or not a string (at most {MAX_TEXT} characters).",
                400,
            )
        for field in ("username", "channel", "icon_url", "icon_emoji"):
            if not isinstance(payload.get(field, ""), str):
                return app_error("web.incoming_webhook.parse.app_error", "Unable to parse.", 400)
        if not isinstance(payload.get("attachments", []), list):
            return app_error("web.incoming_webhook.parse.app_error", "Unable to parse.", 400)
        with self._state:
            self._posts[name].append(payload)
        if self.on_post is not None:
            self.on_post(name, payload)
        return Response.text("ok")

    @staticmethod
    def _payload(request: Request) -> dict[str, Any] | Response:
        ctype = (request.header("Content-Type") or "").split(";")[0].strip()
        try:
            if ctype == "application/json":
                doc = json.loads(request.body.decode("utf-8"))
            else:
                form = parse_qs(request.body.decode("utf-8"))
                doc = json.loads(form["payload"][0])
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            return app_error(
                "web.incoming_webhook.parse.app_error",
                "Unable to parse incoming data.",
                400,
                f"{type(exc).__name__}",
            )
        if not isinstance(doc, dict):
            return app_error("web.incoming_webhook.parse.app_error", "Unable to parse.", 400)
        return doc
