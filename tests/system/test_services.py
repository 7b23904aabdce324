"""scripts/services.sh: a service does not start on a port someone else already serves."""

from __future__ import annotations

import os
import subprocess

import pytest
from support import ROOT, SERVICE_OF

pytestmark = pytest.mark.broker


def test_a_port_in_use_stops_the_start_with_a_message(tmp_path, broker):
    # The test broker's port, for a broker of the same kind in another services directory.
    service = SERVICE_OF[broker["BROKER"]]
    env = {**os.environ, "OPSAGENT_SERVICES": str(tmp_path / "svc"),
           f"{service.upper()}_STOMP_PORT": broker["ACTIVEMQ_PORT"]}
    done = subprocess.run([str(ROOT / "scripts" / "services.sh"), "start", service],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {broker['ACTIVEMQ_PORT']} is already in use" in done.stderr
    assert not (tmp_path / "svc" / "run" / f"{service}.pid").exists()
