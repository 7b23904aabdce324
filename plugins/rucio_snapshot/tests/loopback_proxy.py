"""An HTTP relay on loopback in front of the real Rucio server, to add faults or delay.

Every request is forwarded unchanged to the upstream server unless a fault rule
matches the decoded path and query or the request body (a bulk request names its
datasets there), in which case the relay answers that status
itself (as Rucio does: JSON body with ``ExceptionClass`` / ``ExceptionMessage``).
``delay`` adds that many seconds before each forwarded request: a stand-in for the
round trip to a remote server, used by the benchmark.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "content-length",
}


class RucioRelay:
    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        split = urlsplit(upstream)
        self.upstream_host = split.hostname or "127.0.0.1"
        self.upstream_port = split.port or 80
        self.delay = delay
        self.faults: list[tuple[str, int]] = []
        #: From this many requests on, every request is answered ``failing_status``.
        self.failing_from: int | None = None
        self.failing_status = 503
        #: (fragment, times): the answer to a matching request, its lines repeated.
        self.amplified: list[tuple[str, int]] = []
        self.seen: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def fail(self, fragment: str, status: int = 500) -> None:
        """Answer ``status`` to every request whose decoded path+query or body contains
        ``fragment``."""
        with self._lock:
            self.faults.append((fragment, status))

    def amplify(self, fragment: str, times: int) -> None:
        """Answer a request whose decoded path+query contains ``fragment`` with the real
        answer's lines repeated ``times`` times: a hostile server that lists far more
        than there is (Rucio's listings are one JSON document per line)."""
        with self._lock:
            self.amplified.append((fragment, times))

    def _times(self, target: str) -> int:
        with self._lock:
            return next((t for f, t in self.amplified if f in target), 1)

    def fail_from(self, count: int, status: int = 503) -> None:
        """Answer ``status`` to every request after the first ``count`` from now on: a
        server that starts failing in the middle of a run."""
        with self._lock:
            self.failing_from = len(self.seen) + count
            self.failing_status = status

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _fault_for(self, target: str, body: bytes | None) -> int | None:
        text = body.decode("utf-8", "replace") if body else ""
        with self._lock:
            self.seen.append(target)
            if self.failing_from is not None and len(self.seen) > self.failing_from:
                return self.failing_status
            for fragment, status in self.faults:
                if fragment in target or fragment in text:
                    return status
        return None

    def start(self) -> RucioRelay:
        relay = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out as two writes: without this, Nagle and the
                # peer's delayed ACK hold every keep-alive answer ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                status = relay._fault_for(unquote(self.path), body)
                if status is not None:
                    payload = json.dumps(
                        {
                            "ExceptionClass": "RucioException",
                            "ExceptionMessage": "injected by the test relay",
                        }
                    )
                    self._answer(
                        status,
                        [
                            ("Content-Type", "application/json"),
                            ("ExceptionClass", "RucioException"),
                            ("ExceptionMessage", "injected by the test relay"),
                        ],
                        payload.encode(),
                    )
                    return
                with relay._lock:
                    relay.in_flight += 1
                    relay.most_in_flight = max(relay.most_in_flight, relay.in_flight)
                try:
                    self._forward(body)
                finally:
                    with relay._lock:
                        relay.in_flight -= 1

            def _forward(self, body: bytes | None) -> None:
                if relay.delay:
                    time.sleep(relay.delay)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in HOP_BY_HOP and k.lower() != "host"
                }
                for attempt in (1, 2):
                    conn = getattr(local, "conn", None)
                    if conn is None:
                        conn = local.conn = http.client.HTTPConnection(
                            relay.upstream_host, relay.upstream_port, timeout=120
                        )
                        conn.connect()
                        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                        break
                    except (ConnectionError, http.client.HTTPException):
                        conn.close()
                        local.conn = None
                        if attempt == 2:
                            raise
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
                times = relay._times(unquote(self.path))
                if times > 1 and resp.status == 200:
                    lines = data.rstrip(b"\n")
                    data = b"\n".join([lines] * times) + b"\n"
                self._answer(resp.status, out, data)

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="rucio-relay",
        ).start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> RucioRelay:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()
