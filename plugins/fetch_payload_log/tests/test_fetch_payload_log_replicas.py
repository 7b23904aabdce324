"""Replica choice, and the production x509 login against a small HTTPS endpoint of our own.

The local Rucio server speaks plain HTTP, and x509 needs TLS in front of it, so the x509
path is exercised against a loopback HTTPS server that requires the proxy as the
client certificate and answers ``/auth/x509_proxy`` and ``/replicas/list`` the way Rucio
does; the copy and extraction then run against the real xrootd.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fpl_tarballs as T
import pytest
from fpl_support import XRootD
from opsagent import JobFailed
from opsagent.testing import self_signed, structure
from opsagent_fetch_payload_log import FetchConfig, FetchInput
from opsagent_fetch_payload_log.fetch import fetch
from opsagent_fetch_payload_log.replicas import rank


def entry(**pfns: tuple[str, int]) -> dict[str, Any]:
    return {
        "pfns": {
            pfn: {"rse": rse, "priority": prio, "type": "DISK"} for pfn, (rse, prio) in pfns.items()
        }
    }


def test_xrootd_is_preferred_over_a_better_ranked_https_replica() -> None:
    got = rank(
        entry(
            **{
                "https://web.example:443/x.log.tgz": ("WEB", 1),
                "root://b.example:1094//x.log.tgz": ("B", 3),
                "root://a.example:1094//x.log.tgz": ("A", 2),
            }
        )
    )
    assert [r.pfn for r in got] == [
        "root://a.example:1094//x.log.tgz",
        "root://b.example:1094//x.log.tgz",
        "https://web.example:443/x.log.tgz",
    ]


def test_schemes_xrdcp_should_not_read_are_never_chosen() -> None:
    got = rank(
        entry(
            **{
                "file:///etc/passwd": ("LOCAL", 1),
                "srm://se.example:8443/x.log.tgz": ("SRM", 1),
                "root://ok.example:1094//x log.tgz": ("SPACE", 1),
                "root://ok.example:1094//x.log.tgz\n-f": ("NEWLINE", 1),
                "davs://dav.example:443/x.log.tgz": ("DAV", 5),
            }
        )
    )
    assert [r.rse for r in got] == ["DAV"]


# --- the x509 path -------------------------------------------------------------------


class FakeRucioTLS:
    """Rucio's x509 login and replica listing over TLS; the login needs a client certificate."""

    def __init__(
        self, tmp: Path, trusted_client: Path, replicas: dict[str, dict[str, Any]]
    ) -> None:
        served = self_signed(tmp, "127.0.0.1", days=1, ip="127.0.0.1")
        self.cert = served.cert
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(served.cert, served.key)
        # Like Rucio's servers: a client certificate is optional for the connection and
        # required by the x509 login; when one is presented it must verify.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(trusted_client)
        self.logins: list[dict[str, Any]] = []
        self.listings: list[dict[str, Any]] = []
        self.token = f"token-{uuid.uuid4().hex}"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                peer = self.connection.getpeercert()
                if self.path.startswith("/auth/x509_proxy") and peer:
                    subject = dict(x[0] for x in peer["subject"])
                    outer.logins.append(
                        {
                            "cn": subject.get("commonName"),
                            "account": self.headers.get("X-Rucio-Account"),
                            "vo": self.headers.get("X-Rucio-VO"),
                        }
                    )
                    self._send(
                        200,
                        b"",
                        {
                            "X-Rucio-Auth-Token": outer.token,
                            "X-Rucio-Auth-Token-Expires": "Sat, 01 Jan 2100 00:00:00 UTC",
                        },
                    )
                else:
                    self._send(404, b"{}", {"Content-Type": "application/json"})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.listings.append(
                    {"token": self.headers.get("X-Rucio-Auth-Token"), "dids": body["dids"]}
                )
                if (
                    self.path != "/replicas/list"
                    or self.headers.get("X-Rucio-Auth-Token") != outer.token
                ):
                    self._send(401, b"{}", {"Content-Type": "application/json"})
                    return
                lines = [
                    json.dumps(replicas[d["name"]]) for d in body["dids"] if d["name"] in replicas
                ]
                self._send(
                    200,
                    "\n".join(lines).encode() + b"\n",
                    {"Content-Type": "application/x-json-stream"},
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_rucio(
    tmp_path: Path, proxy_file: Path, xrootd: XRootD
) -> Iterator[tuple[FakeRucioTLS, str]]:
    lfn = f"panda.x509.{uuid.uuid4().hex[:8]}.log.tgz"
    pfn = xrootd.put(lfn, T.honest())
    replicas = {
        lfn: {
            "scope": "epic",
            "name": lfn,
            "bytes": 1000,
            "pfns": {
                "file:///etc/shadow": {"rse": "LOCAL", "priority": 1, "type": "DISK"},
                pfn: {"rse": "XRD", "priority": 2, "type": "DISK"},
            },
            "rses": {},
            "states": {},
        }
    }
    server = FakeRucioTLS(tmp_path, proxy_file, replicas)
    yield server, lfn
    server.close()


def test_production_logs_in_with_the_proxy_and_copies_from_xrootd(
    tls_rucio: tuple[FakeRucioTLS, str], make_job, cache: Path
) -> None:  # type: ignore[no-untyped-def]
    server, lfn = tls_rucio
    cfg = FetchConfig(
        rucio_url=server.url,
        auth_type="x509",
        account="panda",
        vo="eic",
        ca_cert=str(server.cert),
        fsync=False,
    )
    inp = structure({"scope": "epic", "lfn": lfn, "jeditaskid": "7", "pandaid": "8"}, FetchInput)
    out = fetch(inp, make_job(cfg))
    assert out.data["members"] == sorted(T.KEPT)
    assert server.logins == [{"cn": "opsagent test proxy", "account": "panda", "vo": "eic"}]
    assert server.listings == [{"token": server.token, "dids": [{"scope": "epic", "name": lfn}]}]
    assert sorted(os.listdir(cache / "panda-logs/7/8")) == [".done", *sorted(T.KEPT)]


def test_a_server_that_does_not_trust_the_proxy_is_a_login_failure(
    tmp_path: Path, make_job, cache: Path, xrootd: XRootD
) -> None:  # type: ignore[no-untyped-def]
    other = self_signed(tmp_path / "other", "someone else", days=1)
    server = FakeRucioTLS(tmp_path, other.cert, {})
    try:
        cfg = FetchConfig(
            rucio_url=server.url,
            auth_type="x509",
            account="panda",
            ca_cert=str(server.cert),
            rucio_timeout=5,
        )
        inp = structure(
            {"scope": "epic", "lfn": "x.log.tgz", "jeditaskid": "7", "pandaid": "8"}, FetchInput
        )
        with pytest.raises(
            JobFailed,
            match=rf"^rucio: cannot log in to {server.url} as account "
            r"panda \(x509\)",
        ):
            fetch(inp, make_job(cfg))
        assert server.logins == []
    finally:
        server.close()
