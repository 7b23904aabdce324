"""``opsagent plugins`` shows a capability the host would refuse as unavailable (its
credential missing, unsafe or expired) as unavailable, with the host's own reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support import OPSAGENT

SITEJOB = Path(__file__).parents[1] / "isolation" / "sitejob"


def test_plugins_shows_the_status_the_host_reports_at_start_up(host_factory, tmp_path) -> None:
    usable = tmp_path / "usable"
    usable.write_text("secret")
    usable.chmod(0o600)
    missing = tmp_path / "missing"
    host = host_factory(paths=(SITEJOB,), extra={
        "credentials.seencred": {"file": str(missing)},
    }).start()
    host.wait_log("test_seen is unavailable: ")
    line = next(x for x in host.text().splitlines() if "test_seen is unavailable: " in x)
    said = line.split("test_seen is unavailable: ", 1)[1]

    cli = [*OPSAGENT, "--config", str(host.config), "plugins"]
    rows = json.loads(subprocess.run([*cli, "--json"], env=host.env, capture_output=True,
                                     text=True, check=True, timeout=60).stdout)
    by_type = {r["msg_type"]: r for r in rows}
    assert (by_type["test_seen"]["status"], by_type["test_seen"]["error"]) == ("unavailable", said)
    assert str(missing) in said
    assert by_type["health_ping"]["status"] == "ok"
    table = subprocess.run(cli, env=host.env, capture_output=True, text=True, check=True,
                           timeout=60).stdout
    row = next(x for x in table.splitlines() if x.startswith("test_seen "))
    assert "UNAVAILABLE" in row and said in row

    # Once the credential is there, both say it can run.
    host.config.write_text(host.config.read_text().replace(str(missing), str(usable)))
    rows = json.loads(subprocess.run([*cli, "--json"], env=host.env, capture_output=True,
                                     text=True, check=True, timeout=60).stdout)
    seen = next(r for r in rows if r["msg_type"] == "test_seen")
    assert (seen["status"], seen["error"]) == ("ok", None)
