"""``opsagent do`` runs a chain the way the host does, without a broker: each step in
order, each step's event as it ends, then the chain's summary event -- a failing step
fails the chain and the steps after it still run, a step that cannot run is one that
failed, a step input the step refuses stops the chain before any step."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from opsagent.testing import toml_text
from support import OPSAGENT, SITECHAIN


def do(tmp_path: Path, msg_type: str, inp: dict[str, Any] | None = None
       ) -> tuple[int, list[dict[str, Any]], str]:
    config = tmp_path / "opsagent.toml"
    config.write_text(toml_text({"host": {"cache_dir": str(tmp_path / "cache"),
                                          "state_dir": str(tmp_path / "state")}}))
    done = subprocess.run([*OPSAGENT, "--config", str(config), "do", msg_type,
                           "--json", json.dumps(inp or {})],
                          env={**os.environ, "PYTHONPATH": str(SITECHAIN)},
                          capture_output=True, text=True, timeout=120)
    decoder, text, bodies = json.JSONDecoder(), done.stdout.strip(), []
    while text:
        body, end = decoder.raw_decode(text)
        bodies.append(body)
        text = text[end:].strip()
    return done.returncode, bodies, done.stderr


def runs(tmp_path: Path, name: str) -> list[list[str]]:
    path = tmp_path / "cache" / "chain-runs" / f"{name}.runs"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_a_chain_runs_its_steps_in_order_and_a_failed_step_fails_it(tmp_path):
    rc, bodies, err = do(tmp_path, "test_chain_failing", {"created_by": "nightly"})
    assert rc == 1, err
    *steps, chain = bodies
    assert [(b["msg_type"], b["outcome"]) for b in steps] == [
        ("test_step_done", "ok"), ("test_step_failed", "error"), ("test_step_done", "ok")]
    job = chain["job_id"]
    assert [b["job_id"] for b in steps] == [f"{job}/1.step_a", f"{job}/2.step_b",
                                            f"{job}/3.step_c"]
    assert all(b["chain"] == "test_chain_failing" and b["chain_job_id"] == job for b in steps)
    assert "failed on purpose" in steps[1]["error"]
    assert chain["msg_type"] == "test_chain_failing_failed"
    assert (chain["steps"], chain["failed"], chain["raised"]) == (3, ["step_b"], ["step_b"])
    assert chain["error"] == "step(s) failed: step_b"
    # The chain's created_by reached each step that takes it.
    assert [r[2] for n in "abc" for r in runs(tmp_path, n)] == ["nightly"] * 3


def test_a_step_that_cannot_run_is_a_failed_step_and_the_next_ones_run(tmp_path):
    rc, bodies, err = do(tmp_path, "test_chain_locked")
    assert rc == 1, err
    chain = bodies[-1]
    assert chain["failed"] == ["step_locked"]
    locked = chain["results"][1]
    assert locked["outcome"] == "error"
    assert locked["reason"].startswith("not run: test_locked_step is unavailable: ")
    assert runs(tmp_path, "l") == [] and len(runs(tmp_path, "c")) == 1


def test_a_step_input_the_step_refuses_stops_the_chain_before_any_step(tmp_path):
    rc, bodies, _err = do(tmp_path, "test_chain", {"created_by": "--all; rm -rf /"})
    assert rc == 1
    assert len(bodies) == 1 and bodies[0]["outcome"] == "error"
    assert bodies[0]["error"].startswith("invalid input for step step_a (test_step)")
    assert not (tmp_path / "cache" / "chain-runs").exists()
    rc, bodies, _err = do(tmp_path, "test_chain", {"created_by": ["a"]})
    assert rc == 4 and bodies[0]["msg_type"] == "request_rejected"
    assert bodies[0]["errors"][0].startswith("$.created_by")
