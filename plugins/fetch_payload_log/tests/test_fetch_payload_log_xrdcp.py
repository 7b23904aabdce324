"""The copy step against the real xrootd server (scripts/services.sh start xrootd)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from fpl_support import SilentServer, XRootD, processes_mentioning
from opsagent_fetch_payload_log import xrdcp


def env(proxy: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "X509_USER_PROXY": str(proxy)}


def test_a_file_on_the_server_is_copied_byte_for_byte(
    xrootd: XRootD, tmp_path: Path, proxy_file: Path
) -> None:
    data = os.urandom(3 << 20)
    pfn = xrootd.put("copy/blob.log.tgz", data)
    dest = tmp_path / "log.tgz"
    xrdcp.copy(pfn, dest, env=env(proxy_file), timeout=20)
    assert dest.read_bytes() == data


def test_a_missing_file_fails_with_xrdcps_status_and_message(
    xrootd: XRootD, tmp_path: Path, proxy_file: Path
) -> None:
    pfn = f"{xrootd.url}//{xrootd.area}/nope/missing.log.tgz"
    with pytest.raises(
        xrdcp.CopyFailed, match=r"^xrdcp rc=54: .*\[3011\].*no such file or directory.*missing"
    ):
        xrdcp.copy(pfn, tmp_path / "log.tgz", env=env(proxy_file), timeout=20)


def test_an_endpoint_that_never_answers_is_cut_at_the_limit_and_nothing_is_left(
    silent_server: SilentServer, tmp_path: Path, proxy_file: Path
) -> None:
    pfn = f"root://127.0.0.1:{silent_server.port}//hang/x.log.tgz"
    seen: dict[str, bytes] = {}

    def look(pid: int) -> None:
        # The environment xrdcp really got (setpriv execs it in place, same pid).
        def read() -> None:
            time.sleep(0.5)
            seen["environ"] = Path(f"/proc/{pid}/environ").read_bytes()

        threading.Thread(target=read).start()

    started = time.monotonic()
    with pytest.raises(
        xrdcp.CopyFailed,
        match=r"no complete copy of .*hang/x.log.tgz within "
        r"1.5 s \(xrdcp_timeout\); killed",
    ):
        xrdcp.copy(pfn, tmp_path / "log.tgz", env=env(proxy_file), timeout=1.5, on_start=look)
    assert 1.5 <= time.monotonic() - started < 5
    assert silent_server.accepted, "xrdcp never connected"
    assert processes_mentioning(f"127.0.0.1:{silent_server.port}") == []
    assert f"X509_USER_PROXY={proxy_file}".encode() in seen["environ"].split(b"\0")


def test_a_pfn_that_looks_like_an_option_is_refused(tmp_path: Path, proxy_file: Path) -> None:
    with pytest.raises(xrdcp.CopyFailed, match="refusing PFN"):
        xrdcp.copy("--help", tmp_path / "x", env=env(proxy_file), timeout=5)
