"""``opsagent selftest`` for the PanDA capabilities: the budget, the operator's token,
the monitor answering, and under ``--live`` PanDA answering an authenticated call made
through panda-client exactly as the jobs make theirs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import requests
from opsagent import Check, Job, JobFailed, run

from opsagent_panda_ops import operations as ops
from opsagent_panda_ops.config import PandaConfig

MARK = "OPSAGENT-PANDA-CHECK "
#: Lists at most one of the caller's tasks: an authenticated call that changes nothing.
PROBE = f"""
import json
from pandaclient import Client
status, data = Client.get_tasks_detailed_info_since(
    since=None, filters={{"jediTaskID": "0"}}, n_tasks=1
)
print({MARK!r} + json.dumps({{"status": status, "ok": isinstance(data, list)}}), flush=True)
"""


def run_checks(job: Job, register: Callable[[Check], None], live: bool) -> None:
    cfg: PandaConfig = job.config if job.config is not None else PandaConfig()
    try:
        cfg.check_time_limit(job.time_limit)
        budget = cfg.budget(job.time_limit)
        register(Check.ok("budget", f"{budget:g} s for PanDA within {job.time_limit:g} s"))
    except ValueError as exc:
        register(Check.fail("budget", str(exc)))
        return
    try:
        token = ops.load_token(job, budget)
        register(Check.ok("panda token", repr(token)))
    except JobFailed as exc:
        register(Check.fail("panda token", exc.reason))
        token = None
    register(_monitor(cfg))
    if live and token is not None:
        register(_panda(job, cfg, token))


def _monitor(cfg: PandaConfig) -> Check:
    if not cfg.monitor_url:
        return Check.fail("monitor", "monitor_url is not set (nor SWF_MONITOR_HTTP_URL)")
    url = cfg.monitor_url + "/api/capcom/notices/ingest/"
    try:
        resp = requests.get(url, timeout=cfg.monitor_timeout, verify=cfg.ca_bundle or True)
    except requests.RequestException as exc:
        return Check.fail("monitor", f"{url} cannot be reached: {type(exc).__name__}")
    if resp.status_code >= 500:
        return Check.fail("monitor", f"{url} answered HTTP {resp.status_code}")
    return Check.ok("monitor", f"{cfg.monitor_url} answers (HTTP {resp.status_code})")


def _panda(job: Job, cfg: PandaConfig, token: object) -> Check:
    where = cfg.panda_env.get("PANDA_URL_SSL", "panda-client's default server")
    try:
        with ops.sandbox(job, token) as (home, config_root):  # type: ignore[arg-type]
            done = run(
                [cfg.python, "-c", PROBE],
                env=ops.runner_env(job, cfg, home, config_root),
                cwd=home,
                timeout=cfg.monitor_timeout * 3,
                grace=1.0,
            )
    except (JobFailed, OSError) as exc:
        return Check.fail("panda (live)", str(exc))
    for line in reversed(done.output.splitlines()):
        if line.startswith(MARK):
            answer = json.loads(line[len(MARK) :])
            if answer.get("status") == 0 and answer.get("ok"):
                return Check.ok("panda (live)", f"{where} answers an authenticated call")
            return Check.fail(
                "panda (live)", f"{where} refused or failed (status {answer.get('status')})"
            )
    why = "no answer in time" if done.timed_out else f"panda-client exit {done.returncode}"
    return Check.fail("panda (live)", f"{where}: {why}")


def run_evgen_checks(job: Job, register: Callable[[Check], None], live: bool) -> None:
    from opsagent_panda_ops.evgen import EvgenConfig

    cfg: EvgenConfig = job.config if job.config is not None else EvgenConfig()
    try:
        cfg.check_time_limit(job.time_limit)
        register(Check.ok("budget", f"inner budgets within {job.time_limit:g} s"))
    except ValueError as exc:
        register(Check.fail("budget", str(exc)))
    try:
        token = ops.load_token(job, cfg.submit_timeout + cfg.kill_grace)
        register(Check.ok("panda token", repr(token)))
    except JobFailed as exc:
        register(Check.fail("panda token", exc.reason))
        token = None
    if cfg.dispatcher and os.path.isfile(cfg.dispatcher):
        register(Check.ok("dispatcher", cfg.dispatcher))
    else:
        register(Check.fail("dispatcher", f"not configured or missing: {cfg.dispatcher!r}"))
    register(_pcs(cfg.monitor_url, cfg.pcs_timeout, cfg.ca_bundle))
    if live and token is not None:
        pcfg = PandaConfig(
            monitor_url=cfg.monitor_url,
            vo=cfg.vo,
            panda_sys=cfg.panda_sys,
            panda_env=cfg.panda_env,
            monitor_timeout=cfg.pcs_timeout,
        )
        register(_panda(job, pcfg, token))


def _pcs(url: str, timeout: float, ca_bundle: str | None) -> Check:
    if not url:
        return Check.fail("catalogue", "monitor_url is not set (nor SWF_MONITOR_HTTP_URL)")
    probe = url + "/pcs/api/prod-tasks/command/"
    try:
        resp = requests.get(probe, timeout=timeout, verify=ca_bundle or True)
    except requests.RequestException as exc:
        return Check.fail("catalogue", f"{probe} cannot be reached: {type(exc).__name__}")
    if resp.status_code >= 500:
        return Check.fail("catalogue", f"{probe} answered HTTP {resp.status_code}")
    return Check.ok("catalogue", f"{url} answers (HTTP {resp.status_code})")
