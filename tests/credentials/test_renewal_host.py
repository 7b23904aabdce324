"""A host that renews a token while it runs, on the real broker and the real Keycloak."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from opsagent.credentials.renewal import TokenFile
from prometheus_client.parser import text_string_to_metric_families
from test_renewal import kc, login, token_file  # noqa: F401 - kc is a fixture

pytestmark = pytest.mark.broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def renewing_host(host_factory, path, issuer, client_id, port):
    return host_factory(extra={
        "credentials.testtoken": {"file": str(path)},
        "renewal.testtoken": {"grant": "refresh_token", "client_id": client_id,
                              "issuer": issuer, "retry_seconds": 1.0},
        "metrics": {"enabled": True, "port": port},
    }).start()


def test_a_job_running_across_a_renewal_sees_whole_tokens_and_the_next_job_the_new_one(
        kc, host_factory, caller_for, tmp_path):  # noqa: F811
    path = token_file(tmp_path, login(kc))
    first = TokenFile.parse(path.read_bytes())
    port = free_port()
    host = renewing_host(host_factory, path, kc["KEYCLOAK_ISSUER"], kc["KEYCLOAK_CLIENT_ID"],
                         port)
    caller = caller_for(host)
    # Due a tenth of the token's life after issue: the job reads across that moment.
    due = first.issued_at + first.lifetime * 0.1
    seconds = max(2.0, due - time.time() + 4.0)
    event = caller.wait_event(caller.send("test_read_token", {"seconds": seconds}),
                              timeout=seconds + 30)
    assert event["outcome"] == "ok", event
    assert event["torn"] == 0 and event["reads"] > 100
    assert len(event["tokens"]) == 2, "the job saw the old token, then the renewed one"
    assert event["own"] == event["tokens"][0], "the job's own copy stayed the one it began with"
    host.wait_log("credential testtoken renewed (refresh_token)")
    renewed = TokenFile.parse(path.read_bytes())
    assert renewed.expires_at > first.expires_at
    m = scrape(port)
    assert m[("opsagent_credential_renewals_total",
              (("credential", "testtoken"), ("result", "ok")))] == 1
    assert m[("opsagent_credential_renewal_failing", (("credential", "testtoken"),))] == 0
    # The host looked at the credential again at once: it knows the new expiry.
    assert m[("opsagent_credential_expiry_timestamp_seconds",
              (("credential", "testtoken"),))] == renewed.expires_at
    assert open(path, "rb").read().decode() not in host.text()


def test_a_failing_renewal_shows_in_the_metrics_and_the_status_while_jobs_still_run(
        kc, host_factory, caller_for, tmp_path):  # noqa: F811
    path = token_file(tmp_path, login(kc))
    token = TokenFile.parse(path.read_bytes())
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    host = renewing_host(host_factory, path, f"http://127.0.0.1:{dead}/realms/opsagent",
                         kc["KEYCLOAK_CLIENT_ID"], port)
    time.sleep(max(0.0, token.issued_at + token.lifetime * 0.1 - time.time()))
    host.wait_log("credential testtoken could not be renewed", timeout=20)
    m = scrape(port)
    assert m[("opsagent_credential_renewal_failing", (("credential", "testtoken"),))] == 1
    assert m[("opsagent_credential_renewals_total",
              (("credential", "testtoken"), ("result", "failed")))] >= 1
    # The old token is still valid: jobs that need it go on.
    caller = caller_for(host)
    event = caller.wait_event(caller.send("test_read_token", {"seconds": 0.1}))
    assert event["outcome"] == "ok" and event["torn"] == 0
