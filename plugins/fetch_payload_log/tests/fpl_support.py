"""Helpers of the fetch_payload_log tests: the real services, a silent endpoint, trees."""

from __future__ import annotations

import os
import socket
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any

import attrs
from opsagent.testing import self_signed
from opsagent_fetch_payload_log import demo
from opsagent_fetch_payload_log.config import FetchConfig

REPO = Path(__file__).resolve().parents[3]
SERVICES = Path(os.environ.get("OPSAGENT_SERVICES", REPO / ".services"))


def service_env(name: str) -> dict[str, str]:
    """``.services/<name>.env`` (written by ``scripts/services.sh start <name>``), or {}."""
    path = SERVICES / f"{name}.env"
    return demo.read_env(path) if path.is_file() else {}


def setting(env: dict[str, str], key: str) -> str | None:
    return os.environ.get(key) or env.get(key)




@attrs.frozen
class XRootD:
    """The real xrootd server; tests put their files under ``area`` of its export."""

    url: str
    data: Path
    area: str

    def put(self, name: str, data: bytes) -> str:
        """Store ``data`` on the server; return its ``root://`` URL."""
        path = self.data / self.area / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
        return f"{self.url}//{self.area}/{name}"


@attrs.define
class Rucio:
    """The real Rucio server, with an RSE on the real xrootd and a scope for tests."""

    url: str
    account: str
    username: str
    password: str
    client: Any
    xrootd: XRootD
    rse: str = ""
    scope: str = "fpltest"

    def config(self, **overrides: Any) -> FetchConfig:
        """The capability's configuration for this server (userpass), without fsync."""
        settings: dict[str, Any] = {
            "rucio_url": self.url,
            "auth_type": "userpass",
            "account": self.account,
            "username": self.username,
            "password": self.password,
            "rucio_timeout": 10.0,
            "fsync": False,
            **overrides,
        }
        return FetchConfig(**settings)

    def register(self, data: bytes, name: str | None = None) -> str:
        """Put ``data`` on xrootd and register it as a replica; return its Rucio name."""
        name = name or f"panda.test.{uuid.uuid4().hex[:10]}.log.tgz"
        pfn = self.xrootd.put(name, data)
        replica = {
            "scope": self.scope,
            "name": name,
            "bytes": len(data),
            "adler32": f"{zlib.adler32(data):08x}",
            "pfn": pfn,
        }
        self.client.add_replicas(self.rse, [replica])
        return name

    def register_elsewhere(
        self, name: str, pfn: str, size: int = 100, rse: str | None = None
    ) -> None:
        """Register a replica whose PFN is ``pfn`` (on an RSE with that endpoint)."""
        replica = {
            "scope": self.scope,
            "name": name,
            "bytes": size,
            "adler32": "00000001",
            "pfn": pfn,
        }
        self.client.add_replicas(rse or self.rse, [replica])

    def add_rse(self, scheme: str, host: str, port: int) -> str:
        """A new RSE whose protocol is ``scheme://host:port/``."""
        rse = f"FPLTEST{uuid.uuid4().hex[:8].upper()}"
        demo.ensure_rse(self.client, rse, host, port, scheme)
        return rse


class SilentServer:
    """Accepts TCP connections on loopback and never answers (a hung storage endpoint)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (other than this test process)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


def tree(root: Path) -> dict[str, tuple[str, int, bytes | str | None]]:
    """Everything under ``root``: relative path -> (kind, mode, content or link target)."""
    out: dict[str, tuple[str, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", 0, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, None)
            else:
                out[rel] = ("file", st.st_mode & 0o7777, p.read_bytes())
    return out


def expired_proxy(directory: Path) -> Path:
    """A certificate and key whose notAfter is a day in the past, mode 0600."""
    return self_signed(directory, "expired", days=-1).combined(directory / "x509up_expired")
