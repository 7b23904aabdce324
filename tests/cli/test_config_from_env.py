"""``opsagent config --from-env``: the old unit's environment file as the TOML that makes
the host behave the same without it; never executed; what has no equivalent is named."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import attrs
import pytest
from opsagent.host import config as configuration
from opsagent.host import plugins
from support import OPSAGENT

PRODUCTION_ENV = """\
# The old agent's environment file
export ACTIVEMQ_HOST=broker.example
ACTIVEMQ_PORT=61612
ACTIVEMQ_USER=epicprod
ACTIVEMQ_PASSWORD='a broker password'
ACTIVEMQ_USE_SSL=true
SWF_TMP_DIR=/data/swf-tmp
SWF_MONITOR_URL=https://monitor.example/swf-monitor
SWF_MONITOR_HTTP_URL="http://localhost:8002"   # the tunnel
SWFMON_TOKEN=monitor-token-3f1c
X509_USER_PROXY=/data/wenauseic/longproxy-for-rucio
RUCIO_URL=https://rucio.example:443
PANDA_CONFIG_ROOT=/home/wenauseic/.pathena
PANDA_URL_SSL=https://panda.example:25443/server/panda
EPICPROD_FETCH_TIMEOUT=240
EPICPROD_RUCIO_SNAPSHOT_TIMEOUT=1200
EPICPROD_AUTOMATCH_TIMEOUT=1800
EPICPROD_RETIRED_TIMEOUT=60
DB_PASSWORD=database-password-9a
SOMETHING_ELSE=x
"""


def convert(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "production.env"
    env_file.write_text(text)
    clean = {k: v for k, v in os.environ.items() if k not in _old_names(text)}
    return subprocess.run([*OPSAGENT, "config", "--from-env", str(env_file)], env=clean,
                          capture_output=True, text=True, timeout=60)


def _old_names(text: str) -> set[str]:
    return {line.removeprefix("export ").split("=", 1)[0].strip()
            for line in text.splitlines() if "=" in line and not line.startswith("#")}


def test_the_toml_makes_the_host_what_the_environment_file_made_it(tmp_path, monkeypatch):
    done = convert(tmp_path, PRODUCTION_ENV)
    assert done.returncode == 0, done.stderr
    toml_file = tmp_path / "opsagent.toml"
    toml_file.write_text(done.stdout)
    assert tomllib.loads(done.stdout)
    for name in _old_names(PRODUCTION_ENV):
        monkeypatch.delenv(name, raising=False)
    from_file = configuration.load(toml_file)
    for line in PRODUCTION_ENV.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.removeprefix("export ").partition("=")
            monkeypatch.setenv(key, value.split("#")[0].strip().strip("'\""))
    from_env = configuration.Config()
    for section in ("host", "monitor"):
        assert getattr(from_file, section) == getattr(from_env, section), section
    # The broker password is a secret: it stays in the environment file.
    # ... and the file adds exclusive = true, for the cut-over (docs/cutover.md).
    assert from_file.broker.exclusive is True
    assert attrs.evolve(
        from_file.broker, password=from_env.broker.password, exclusive=False
    ) == from_env.broker
    registry = plugins.load()
    for msg_type in ("fetch_payload_log", "rucio_snapshot_update"):
        cap = registry.capabilities[msg_type]
        assert configuration.overrides(from_file, cap) == configuration.overrides(from_env, cap)
    assert from_file.capability["fetch_payload_log"]["rucio_url"] == "https://rucio.example:443"
    assert from_file.capability["submit_task"]["panda_env"] == {
        "PANDA_URL_SSL": "https://panda.example:25443/server/panda"}
    assert from_file.credentials["x509_proxy"].file == "/data/wenauseic/longproxy-for-rucio"
    assert from_file.credentials["panda_oidc_token"].file == "/home/wenauseic/.pathena/.token"
    assert from_file.credentials["swf_api_token"].env == "SWFMON_TOKEN"
    # No secret is copied into the TOML.
    for secret in ("a broker password", "monitor-token-3f1c", "database-password-9a"):
        assert secret not in done.stdout


def test_what_has_no_equivalent_is_named_with_the_reason(tmp_path):
    out = convert(tmp_path, PRODUCTION_ENV).stdout
    left = out.split("# No equivalent", 1)[1]
    # A time limit variable is converted when an installed capability declares it
    # (opsagent-epicprod declares questionnaire_automatch's), and named otherwise.
    assert "time_limit = 1800.0  # was EPICPROD_AUTOMATCH_TIMEOUT" in out
    assert "#   EPICPROD_RETIRED_TIMEOUT: no installed capability declares it" in left
    assert "#   DB_PASSWORD: the web tier's database settings" in left
    assert "#   SOMETHING_ELSE: unknown to the host" in left
    assert "RUCIO_URL" not in left and "ACTIVEMQ_PASSWORD" not in left
    assert "ACTIVEMQ_PASSWORD: a secret -- keep it in the unit's environment file" in out


@pytest.mark.parametrize("line", [
    "SWF_TMP_DIR=$(touch {marker})",
    "SWF_TMP_DIR=`touch {marker}`",
    "touch {marker}",
    "SWF_TMP_DIR=x; touch {marker}",
])
def test_the_file_is_never_executed(tmp_path, line):
    marker = tmp_path / "ran"
    done = convert(tmp_path, line.format(marker=marker) + "\n")
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert tomllib.loads(done.stdout) is not None


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    done = subprocess.run([*OPSAGENT, "config", "--from-env", str(tmp_path / "nope.env")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"cannot read {tmp_path / 'nope.env'}" in done.stderr
