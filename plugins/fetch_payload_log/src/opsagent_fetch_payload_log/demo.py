"""Seed the local services with a demo log tarball, so the README's example works.

    python -m opsagent_fetch_payload_log.demo [--services .services]

Reads the service settings ``scripts/services.sh start xrootd rucio`` wrote
(``<services>/xrootd.env``, ``<services>/rucio.env``), then, idempotently: an RSE
``XRD-LOCAL`` whose protocol is the local xrootd (``rucio.rse.protocols.xrootd.Default``),
the scope ``epic``, a pilot-shaped log tarball stored on xrootd and registered as the
replica of ``epic:panda.demo.1001.000001.log.tgz``, a self-signed certificate standing
in for the x509 proxy (``<services>/demo/x509up``) and the Rucio password as the
``rucio_userpass`` credential (``<services>/demo/rucio-password``, mode 0600).  It prints
the configuration the host needs and the command that fetches the log.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Any

from opsagent import rucio_client

RSE = "XRD-LOCAL"
SCOPE = "epic"
LFN = "panda.demo.1001.000001.log.tgz"
JEDITASKID, PANDAID = "1001", "4242"
_PILOT_DIR = "tarball_PandaJob_4242_DEMO-SITE"


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def admin_client(url: str, account: str, username: str, password: str, token_dir: Path) -> Any:
    """A rucio-clients Client whose login token lives in ``token_dir``."""
    return rucio_client(
        token_dir,
        rucio_host=url,
        auth_host=url,
        account=account,
        auth_type="userpass",
        creds={"username": username, "password": password},
        timeout=30,
    )


def ensure_rse(client: Any, name: str, host: str, port: int, scheme: str = "root") -> None:
    """A non-deterministic RSE whose one protocol is ``scheme://host:port/``."""
    from rucio.common.exception import Duplicate, RSENotFound

    try:
        client.get_rse(name)
    except RSENotFound:
        client.add_rse(name, deterministic=False)
    impl = (
        "rucio.rse.protocols.xrootd.Default"
        if scheme == "root"
        else "rucio.rse.protocols.gfal.Default"
    )
    try:
        client.add_protocol(
            name,
            {
                "scheme": scheme,
                "hostname": host,
                "port": port,
                "prefix": "/",
                "impl": impl,
                "domains": {
                    "lan": {"read": 1, "write": 1, "delete": 1},
                    "wan": {"read": 1, "write": 1, "delete": 1},
                },
            },
        )
    except Duplicate:
        pass


def ensure_scope(client: Any, account: str, scope: str) -> None:
    from rucio.common.exception import Duplicate

    try:
        client.add_scope(account, scope)
    except Duplicate:
        pass


def store_and_register(
    client: Any,
    *,
    rse: str,
    scope: str,
    name: str,
    data: bytes,
    xrootd_url: str,
    xrootd_data: Path,
    area: str,
) -> str:
    """Write ``data`` into the xrootd export and register it as ``scope:name`` on ``rse``."""
    from rucio.common.exception import Duplicate

    path = xrootd_data / area / name
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in (xrootd_data / area, *(xrootd_data / area).parents):
        if parent == xrootd_data:
            break
        parent.chmod(0o755)
    path.write_bytes(data)
    path.chmod(0o644)
    pfn = f"{xrootd_url}//{area}/{name}"
    try:
        client.add_replicas(
            rse,
            [
                {
                    "scope": scope,
                    "name": name,
                    "bytes": len(data),
                    "adler32": f"{zlib.adler32(data):08x}",
                    "pfn": pfn,
                }
            ],
        )
    except Duplicate:
        pass
    return pfn


def demo_tarball() -> bytes:
    """What a pilot leaves: a directory with the four logs and a few other files."""
    files = {
        "payload.stdout": b"Running eicrecon on 100 events\n" + b"event processed\n" * 100,
        "payload.stderr": b"warning: demo payload, nothing to worry about\n",
        "pilotlog.txt": b"2026-01-01 00:00:00 | pilot | job 4242 started\n" * 20,
        "pandatracerlog.txt": b"tracer: stage-out done\n",
        "jobReport.json": b'{"exitCode": 0}\n',
        "memory_monitor_output.txt": b"time vmem pss rss swap\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(_PILOT_DIR)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_767_225_600
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{_PILOT_DIR}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_767_225_600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def stand_in_proxy(path: Path) -> Path:
    """A self-signed certificate and key, mode 0600, valid for a year (the local xrootd
    and Rucio do not check it; the capability checks its expiry and mode)."""
    if path.exists():
        return path
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsagent demo proxy")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return path


def password_file(path: Path, password: str) -> Path:
    """The Rucio password as a credential file: mode 0600, owned by whoever runs the host."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    path.chmod(0o600)
    return path


def seed(services: Path) -> dict[str, str]:
    xrd = read_env(services / "xrootd.env")
    ruc = read_env(services / "rucio.env")
    url = ruc["RUCIO_TEST_URL"]
    account = ruc.get("RUCIO_TEST_ACCOUNT", "root")
    client = admin_client(
        url,
        account,
        ruc["RUCIO_TEST_USERNAME"],
        ruc["RUCIO_TEST_PASSWORD"],
        services / "demo" / "rucio-token",
    )
    host, _, port = xrd["XROOTD_TEST_URL"].split("://", 1)[1].rpartition(":")
    ensure_rse(client, RSE, host, int(port))
    ensure_scope(client, account, SCOPE)
    pfn = store_and_register(
        client,
        rse=RSE,
        scope=SCOPE,
        name=LFN,
        data=demo_tarball(),
        xrootd_url=xrd["XROOTD_TEST_URL"],
        xrootd_data=Path(xrd["XROOTD_DATA"]),
        area="demo",
    )
    proxy = stand_in_proxy(services / "demo" / "x509up")
    password = password_file(services / "demo" / "rucio-password", ruc["RUCIO_TEST_PASSWORD"])
    return {
        "pfn": pfn,
        "proxy": str(proxy),
        "password_file": str(password),
        "rucio_url": url,
        "account": account,
        "username": ruc["RUCIO_TEST_USERNAME"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--services",
        default=os.environ.get("OPSAGENT_SERVICES", ".services"),
        help="where scripts/services.sh keeps its state (default .services)",
    )
    args = ap.parse_args(argv)
    services = Path(args.services).resolve()
    try:
        got = seed(services)
    except FileNotFoundError as exc:
        print(
            f"demo: {exc.filename} missing; start the services first: "
            "scripts/services.sh start xrootd rucio",
            file=sys.stderr,
        )
        return 1
    print(f"demo: {SCOPE}:{LFN} is on {RSE} at {got['pfn']}")
    print("demo: the host's configuration needs:\n")
    print(f'[credentials.x509_proxy]\nfile = "{got["proxy"]}"\n')
    print(f'[credentials.rucio_userpass]\nfile = "{got["password_file"]}"\n')
    print("[capability.fetch_payload_log]")
    for key in ("rucio_url", "account", "username"):
        print(f'{key} = "{got[key]}"')
    print('auth_type = "userpass"\n')
    print(
        f"demo: then: opsagent send fetch_payload_log scope={SCOPE} lfn={LFN} "
        f"jeditaskid={JEDITASKID} pandaid={PANDAID} --wait"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
