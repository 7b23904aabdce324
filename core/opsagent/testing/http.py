"""Faithful HTTP fakes on loopback, for tests of capabilities that talk to web services.

A :class:`FakeServer` listens on ``127.0.0.1`` on a free port and serves each request
on its own thread.  Routes are registered per method and path; a path segment written
``<name>`` matches any one segment and reaches the handler, percent-decoded, as
``request.params[name]`` (an encoded ``/``, ``%2F``, stays inside its segment).
A handler gets a parsed :class:`Request` and returns a :class:`Response` (or a ``dict``
or ``list``, sent as JSON, or a ``str``, sent as ``text/plain``).  Every request is
recorded, matched or not, before its handler runs, so a test can assert on what was
sent even when the handler hangs::

    with FakeServer() as pcs:
        @pcs.route("GET", "/pcs/api/prod-tasks/<name>/")
        def task(req):
            return {"name": req.params["name"], "panda_task_id": None}

        pcs.route("POST", "/record/", Response.unavailable())  # always 503
        pcs.route("GET", "/slow/", hang)                       # never answers
        ...  # point the code under test at pcs.url
        assert pcs.requests_to("GET", "/pcs/api/prod-tasks/t1/")

As a pytest fixture::

    @pytest.fixture
    def pcs():
        with FakeServer() as server:
            yield server

An unrouted request gets ``404`` with a JSON ``detail``; a handler that raises gets
``500`` with the exception in ``detail`` (and the exception is kept in ``errors`` so a
test can fail on it).  :func:`hang` blocks until the server closes, which is how a test
makes a client hit its own timeout; closing the server releases every hung handler.
:func:`drop` closes the connection without an answer (a transport error).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

#: The longest a hung handler waits if the server is never closed (a safety net).
HANG_LIMIT = 120.0


@attrs.frozen
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = attrs.Factory(dict)
    client: str = ""
    #: ``time.monotonic()`` when the request arrived (for backoff and ordering checks).
    received: float = 0.0

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or ``None``."""
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name, or ``None``."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    def json(self) -> Any:
        """The body decoded as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body as a dict of first values."""
        parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}

    def files(self) -> dict[str, tuple[str | None, bytes]]:
        """A ``multipart/form-data`` body as ``{field: (filename, content)}``."""
        ctype = self.header("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            raise ValueError(f"not a multipart body: Content-Type {ctype!r}")
        raw = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + self.body
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        out: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            out[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        return out


@attrs.frozen
class Response:
    """What a handler answers."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = attrs.Factory(dict)

    @classmethod
    def json(
        cls, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return cls(
            status,
            json.dumps(obj).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    @classmethod
    def text(
        cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8"
    ) -> Response:
        return cls(status, text.encode("utf-8"), {"Content-Type": content_type})

    @classmethod
    def unavailable(cls, detail: str = "service unavailable") -> Response:
        return cls.json({"detail": detail}, status=503)


Handler = Callable[[Request], Any]


def hang(_request: Request) -> Response:
    """A handler that never answers (until the server closes): for timeout tests."""
    raise _Hang


class _Hang(Exception):
    pass


def drop(_request: Request) -> Response:
    """A handler that closes the connection without answering: a transport error."""
    raise _Drop


class _Drop(Exception):
    pass


def _as_response(value: Any) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, dict | list):
        return Response.json(value)
    if isinstance(value, str):
        return Response.text(value)
    raise TypeError(
        f"a handler returned {type(value).__name__}; expected Response, dict, list or str"
    )


def _fixed(response: Response) -> Handler:
    def answer(_request: Request) -> Response:
        return response

    return answer


def _match(pattern: str, path: str) -> dict[str, str] | None:
    # Split the path as sent, then decode each segment: a name holding an encoded "/"
    # is one segment, as it is to a real web framework.
    want, got = pattern.split("/"), path.split("/")
    if len(want) != len(got):
        return None
    params: dict[str, str] = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("<") and w.endswith(">") and g:
            params[w[1:-1]] = unquote(g)
        elif w != unquote(g):
            return None
    return params


class FakeServer:
    """An HTTP server on loopback with routes, a request log and controllable failures."""

    def __init__(self, routes: Iterable[tuple[str, str, Handler | Response]] = ()) -> None:
        self._routes: list[tuple[str, str, Handler]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for method, path, handler in routes:
            self.route(method, path, handler)

    # -- routes -----------------------------------------------------------------------

    def route(self, method: str, path: str, handler: Any = None) -> Any:
        """Register ``handler`` for method+path: a function of the :class:`Request`, or a
        fixed answer (a :class:`Response`, or a ``dict``/``list``/``str`` as a handler
        would return it).

        Without ``handler`` it returns a decorator.  A later registration for the same
        method and path replaces the earlier one, so a test can change behaviour midway.
        """
        if handler is None:

            def decorator(fn: Handler) -> Handler:
                self.route(method, path, fn)
                return fn

            return decorator
        fn: Handler = handler if callable(handler) else _fixed(_as_response(handler))
        with self._lock:
            self._routes = [r for r in self._routes if (r[0], r[1]) != (method.upper(), path)]
            self._routes.append((method.upper(), path, fn))
        return handler

    def _find(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        with self._lock:
            routes = list(self._routes)
        for r_method, r_path, fn in routes:
            if r_method == method:
                params = _match(r_path, path)
                if params is not None:
                    return fn, params
        return None

    # -- the request log --------------------------------------------------------------

    def requests_to(self, method: str, path: str) -> list[Request]:
        """The recorded requests with this method and path (exact, query excluded)."""
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    # -- life cycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        server = self
        self._closing.clear()

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # tests read server.requests, not stderr

            def _serve(self) -> None:
                server._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Release hung handlers, stop serving and free the port."""
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- serving ----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length > 0 else b""
        method = h.command.upper()
        request = Request(
            method=method,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=dict(h.headers.items()),
            body=body,
            client=str(h.client_address[0]),
            received=time.monotonic(),
        )
        found = self._find(method, split.path)
        if found is not None:
            request = attrs.evolve(request, params=found[1])
        self._record(request)
        if found is None:
            response = Response.json({"detail": f"no route for {method} {split.path}"}, 404)
        else:
            try:
                response = _as_response(found[0](request))
            except _Hang:
                self._closing.wait(HANG_LIMIT)
                h.close_connection = True
                return
            except _Drop:
                h.close_connection = True
                return
            except Exception as exc:  # noqa: BLE001 - reported to the client and kept
                with self._lock:
                    self.errors.append(exc)
                response = Response.json({"detail": f"{type(exc).__name__}: {exc}"}, 500)
        try:
            h.send_response(response.status)
            for key, value in response.headers.items():
                h.send_header(key, value)
            h.send_header("Content-Length", str(len(response.body)))
            h.end_headers()
            if method != "HEAD":
                h.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
