"""The ``opsagent`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opsagent.host import config as configuration
from opsagent.isolation import jobs

EXIT_STATUS = {
    "ok": 0,
    "error": 1,
    "unrecorded": 2,
    "timeout": 3,
    "rejected": 4,
    "skipped": 0,
    "warning": 5,
    "unverified": 6,
}
#: A configuration ``opsagent do`` cannot run with (sysexits' EX_CONFIG, as the host's).
EXIT_CONFIG = 78


def _config(args: argparse.Namespace) -> configuration.Config:
    path = args.config or os.environ.get("OPSAGENT_CONFIG")
    return configuration.load(path)


def cmd_run(args: argparse.Namespace) -> int:
    from loguru import logger

    from opsagent.host.daemon import Host, StartupError
    from opsagent.reporting import logs

    try:
        cfg = _config(args)
    except configuration.ConfigError as exc:
        print(f"opsagent: configuration error: {exc}", file=sys.stderr)
        return 78
    logs.setup(json_lines=args.log_json or cfg.host.log_json, level=cfg.host.log_level)
    if args.strict:
        import attrs

        cfg = attrs.evolve(cfg, host=attrs.evolve(cfg.host, strict=True))
    from opsagent.credentials.redaction import scrub_stdio
    from opsagent.reporting.systemd import Notifier

    # A copy: the host's own notifier takes the variables out of the environment.
    told = Notifier(dict(os.environ))
    try:
        host = Host(cfg)
        # What plugin code prints in this process goes through the same redaction.
        scrub_stdio(host.redactor)
        return host.run()
    except StartupError as exc:
        logger.error("cannot start: {}", exc)
        told.status(f"cannot start (exit status {exc.status}): {exc}")
        return exc.status
    finally:
        logger.complete()


def _redactor(args: argparse.Namespace) -> Any:
    """Redaction of every secret the configuration can reach, installed for logging."""
    from opsagent.credentials import store as creds
    from opsagent.credentials.redaction import Redactor

    try:
        cfg = _config(args)
    except configuration.ConfigError:
        cfg = configuration.Config()
    redactor = Redactor(creds.secrets_of(cfg.credentials))
    redactor.learn(
        cfg.broker.password,
        cfg.mcp.broker_password,
        *(os.environ.get(v) for v in ("SWF_API_TOKEN", "SWFMON_TOKEN", "SWF_MONITOR_TOKEN")),
    )
    redactor.install()
    return redactor


def _registry(args: argparse.Namespace) -> Any:
    """Every capability: the installed plugins' and the configuration's ``[[program]]``s
    and ``[[chain]]``s."""
    from opsagent.host import plugins

    try:
        cfg = _config(args)
    except configuration.ConfigError:
        cfg = configuration.Config()
    return plugins.load(strict=False, programs=cfg.program, chains=cfg.chain, source=cfg.source)


def _memory_limit(cap: Any, cfg: configuration.Config) -> int | None:
    """MiB of address space of ``cap``'s jobs on this host (0: none; None: not a process job)."""
    if cap.control or cap.isolation != "process":
        return None
    declared = configuration.overrides(cfg, cap).get("memory_limit", cap.memory_limit)
    return int(cfg.host.job_memory_limit_mb if declared is None else declared)


def cmd_plugins(args: argparse.Namespace) -> int:
    redactor = _redactor(args)
    registry = _registry(args)
    try:
        cfg = _config(args)
    except configuration.ConfigError:
        cfg = configuration.Config()
    # The host's own check at start-up: what it would refuse as unavailable is shown so.
    available = jobs.availability(registry.capabilities, cfg)
    available.refresh()
    rows = []
    for cap in sorted(registry.capabilities.values(), key=lambda c: c.msg_type):
        reason = available.unavailable.get(cap.msg_type)
        rows.append(
            {
                "msg_type": cap.msg_type,
                "distribution": cap.distribution,
                "version": cap.version,
                "time_limit": cap.time_limit,
                "credentials": list(cap.credentials),
                "optional_credentials": list(cap.optional_credentials),
                "isolation": "inline" if cap.control else cap.isolation,
                "concurrency": cap.concurrency,
                "memory_limit_mb": _memory_limit(cap, cfg),
                "status": "ok" if reason is None else "unavailable",
                "error": None if reason is None else redactor.scrub(reason),
            }
        )
    for b in registry.broken:
        rows.append(
            {
                "msg_type": None,
                "plugin": b.name,
                "distribution": b.distribution,
                "version": b.version,
                "status": "broken",
                "error": redactor.scrub(b.error),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        fmt = "{:<24} {:<28} {:>9} {:<9} {:<10} {}"
        print(
            fmt.format(
                "MSG_TYPE", "DISTRIBUTION", "LIMIT_S", "ISOLATION", "STATUS", "CREDENTIALS / ERROR"
            )
        )
        for r in rows:
            if r["status"] != "broken":
                print(
                    fmt.format(
                        r["msg_type"],
                        f"{r['distribution']} {r['version']}",
                        f"{r['time_limit']:g}",
                        r["isolation"],
                        "ok" if r["status"] == "ok" else "UNAVAILABLE",
                        r["error"] or ",".join(r["credentials"]) or "-",
                    )
                )
            else:
                print(
                    fmt.format(
                        f"({r['plugin']})",
                        f"{r['distribution']} {r['version']}",
                        "-",
                        "-",
                        "BROKEN",
                        r["error"],
                    )
                )
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from opsagent.host import schedule

    cfg = _config(args)
    registry = _registry(args)
    known = schedule.status(cfg.state_dir / "journal.sqlite3")
    now = time.time()
    rows = []
    for s in schedule.with_builtin(cfg, registry.capabilities):
        seen = known.get(s.label, {})
        rows.append(
            {
                "name": s.label,
                "msg_type": s.msg_type,
                "when": f"every {s.every:g} s" if s.every is not None else f"cron {s.cron}",
                "next_run": schedule.utc(schedule.next_slot(s, now)),
                "last_run": seen.get("last_run"),
                "last_job_id": seen.get("last_job_id"),
                "last_outcome": seen.get("last_outcome"),
                "runs": seen.get("runs", 0),
                "skipped": seen.get("skipped", 0),
                "last_skip": seen.get("last_skip"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    fmt = "{:<20} {:<22} {:<20} {:<20} {:<20} {:>5} {:>7}"
    print(
        fmt.format("NAME", "MSG_TYPE", "WHEN", "NEXT_RUN", "LAST_RUN", "RUNS", "SKIPPED")
        + "  LAST_OUTCOME"
    )
    for r in rows:
        print(
            fmt.format(
                r["name"],
                r["msg_type"],
                r["when"],
                r["next_run"],
                r["last_run"] or "-",
                r["runs"],
                r["skipped"],
            )
            + f"  {r['last_outcome'] or '-'}"
        )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from opsagent.assistant.tools import input_schema

    cap = _registry(args).get(args.msg_type)
    if cap is None:
        print(
            f"opsagent: no capability {args.msg_type!r} (see `opsagent plugins`)", file=sys.stderr
        )
        return 1
    print(json.dumps(input_schema(cap), indent=2))
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """The MCP server: started again with a clean environment first (see
    :mod:`opsagent.assistant.environment`); it reads no credential."""
    import asyncio

    from opsagent.assistant import environment

    # First of all: nothing is read or imported with the environment it was started with.
    password = environment.restart_clean(args.argv)
    import attrs

    from opsagent.assistant import tools

    try:
        cfg = _config(args)
    except configuration.ConfigError as exc:
        print(f"opsagent mcp: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    mcp = cfg.mcp
    if not mcp.broker_user:
        print(
            "opsagent mcp: configuration error: no broker user of its own; set [mcp] "
            "broker_user and broker_password (or OPSAGENT_MCP_BROKER_USER and "
            "OPSAGENT_MCP_BROKER_PASSWORD) -- never the host's",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if mcp.broker_user == cfg.broker.user:
        print(
            f"opsagent mcp: configuration error: [mcp] broker_user {mcp.broker_user!r} is the "
            f"host's own broker user; give the MCP server a user of its own, so that "
            f"allow_users decides what an assistant may call",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        caps = tools.exposed(_registry(args).capabilities, mcp.expose)
    except tools.ExposeError as exc:
        print(f"opsagent mcp: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        from opsagent.assistant import server
        from opsagent.assistant.link import Answers, Link
    except ImportError as exc:
        print(
            f"opsagent mcp: the MCP SDK is not installed ({exc}); install it with "
            f"`pip install 'opsagent[mcp]'`",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    # Where the broker is, from [broker]; who this server is, from [mcp] only.
    broker = attrs.evolve(
        cfg.broker, user=mcp.broker_user, password=password or mcp.broker_password
    )
    settings = server.Settings(cfg.host.namespace, mcp.wait_seconds, mcp.progress_seconds)
    address, port = mcp.http_address, mcp.http_port if args.port is None else args.port
    del cfg, password
    answers = Answers()
    try:
        link = Link(broker, answers)
    except ConnectionError as exc:
        print(f"opsagent mcp: {exc}", file=sys.stderr)
        return 75
    assistant = server.Assistant(caps, link, answers, settings)
    try:
        if args.http:
            asyncio.run(server.serve_http(assistant, address, port))
        else:
            asyncio.run(server.serve_stdio(assistant))
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
    return 0


def _fields(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if ":=" in pair:
            key, raw = pair.split(":=", 1)
            out[key] = json.loads(raw)
        elif "=" in pair:
            key, value = pair.split("=", 1)
            out[key] = value
        else:
            raise SystemExit(f"opsagent: expected key=value or key:=json, got {pair!r}")
    return out


def _status_of(answer: dict[str, Any]) -> str:
    if answer.get("msg_type") == "request_rejected":
        return "rejected"
    return str(answer.get("outcome", "ok"))


def _published(cfg: configuration.Config, body: dict[str, Any], tries: int, reply: bool) -> Any:
    """A client whose publication of ``body`` the broker confirmed, after up to ``tries``.

    Each try connects afresh and waits for the broker's receipt; ``body`` keeps its
    ``request_id``, so a try that did arrive after all is the same request (the host's
    journal runs it once).  ``None`` when every try failed (each failure printed).
    """
    from opsagent.cli.client import Client

    delay = 0.5
    for attempt in range(1, max(1, tries) + 1):
        client = None
        try:
            client = Client(cfg.broker, connect_tries=1)
            if reply:
                body["reply_to"] = client.reply_to
            client.publish(body, confirm=True)
            return client
        except ConnectionError as exc:
            if client is not None:
                client.close()
            print(f"opsagent: try {attempt} of {tries}: {exc}", file=sys.stderr)
            if attempt < tries:
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
    return None


def cmd_send(args: argparse.Namespace) -> int:
    cfg = _config(args)
    body = {"msg_type": args.msg_type, "namespace": cfg.host.namespace, **_fields(args.fields)}
    body.setdefault("request_id", os.urandom(8).hex())
    client = _published(cfg, body, args.tries, reply=args.wait)
    if client is None:
        print(f"opsagent: {args.msg_type} not sent: every try failed", file=sys.stderr)
        return 75
    try:
        if not args.wait:
            print(json.dumps({"sent": body}))
            return 0
        answer = client.wait(str(body["request_id"]), args.timeout)
        if answer is None:
            print(
                f"opsagent: no answer to {args.msg_type} within {args.timeout:g} s", file=sys.stderr
            )
            return 124
        print(json.dumps(answer, indent=2))
        return EXIT_STATUS.get(_status_of(answer), 1)
    finally:
        client.close()


def cmd_ping(args: argparse.Namespace) -> int:
    from opsagent.cli.client import Client

    cfg = _config(args)
    try:
        client = Client(cfg.broker, connect_tries=args.tries)
    except ConnectionError as exc:
        print(f"opsagent: {exc}", file=sys.stderr)
        return 75
    try:
        started = time.perf_counter()
        request_id = client.request({"msg_type": "health_ping", "namespace": cfg.host.namespace})
        answer = client.wait(request_id, args.timeout)
        elapsed = (time.perf_counter() - started) * 1000
        if answer is None or answer.get("msg_type") != "pong":
            print(f"opsagent: no pong within {args.timeout:g} s", file=sys.stderr)
            return 1
        print(f"pong from {answer.get('agent')} (pid {answer.get('pid')}) in {elapsed:.2f} ms")
        return 0
    finally:
        client.close()


class _NotRun(Exception):
    """``opsagent do`` did not run the capability: what to print, and the exit status."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def _invalid(msg_type: str, exc: Any) -> _NotRun:
    """A request ``opsagent do`` refuses: the ``request_rejected`` body the host sends."""
    body = {
        "msg_type": "request_rejected",
        "request": msg_type,
        "code": "invalid",
        "reason": str(exc),
        "errors": exc.errors,
    }
    return _NotRun(EXIT_STATUS["rejected"], str(exc), body)


def cmd_do(args: argparse.Namespace) -> int:
    from opsagent.credentials.redaction import scrub_stdio
    from opsagent.reporting import logs

    logs.setup(level="INFO")
    try:
        cfg = _config(args)
    except configuration.ConfigError as exc:
        print(f"opsagent: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    registry = _registry(args)
    declared = registry.get(args.msg_type)
    if declared is None or declared.control:
        print(f"opsagent: no capability {args.msg_type!r} to run locally", file=sys.stderr)
        return 1
    redactor = _redactor(args)
    # What a thread doer prints goes through redaction too, as in the daemon.
    scrub_stdio(redactor)
    raw = json.loads(args.json) if args.json else {}
    job_id = f"do-{os.getpid()}"
    try:
        if declared.steps:
            outcome = _do_chain(cfg, registry.capabilities, declared, raw, redactor, job_id)
        else:
            outcome = _do_one(cfg, declared, raw, redactor, job_id, {})
    except _NotRun as exc:
        if exc.body is not None:
            print(json.dumps(exc.body, indent=2))
        else:
            print(f"opsagent: {exc}", file=sys.stderr)
        return exc.status
    return EXIT_STATUS.get(outcome.status, 1)


def _do_one(
    cfg: configuration.Config,
    declared: Any,
    raw: dict[str, Any],
    redactor: Any,
    job_id: str,
    echo: dict[str, Any],
) -> Any:
    """Run one capability here as the host would and print its events; its outcome.
    Raises :class:`_NotRun` when it cannot run (bad input, unavailable, bad config)."""
    from opsagent.capability import DeclarationError
    from opsagent.host import events
    from opsagent.schema import InputError, structure

    msg_type = declared.msg_type
    available = jobs.availability({msg_type: declared}, cfg)
    available.refresh()
    for cred in available.found.values():
        try:
            redactor.learn(cred.read())
        except OSError:
            pass
    try:
        factory = jobs.JobFactory.from_config(
            cfg, {msg_type: declared}, credentials=available.usable, learn=redactor.learn
        )
    except (configuration.ConfigError, DeclarationError) as exc:
        raise _NotRun(EXIT_CONFIG, f"configuration error: {exc}") from None
    cap = factory.capability(msg_type)
    try:
        inp = structure(raw, cap.input)
    except InputError as exc:
        raise _invalid(cap.msg_type, exc) from None
    if msg_type in available.unavailable:
        raise _NotRun(
            EXIT_STATUS["error"], f"{msg_type} is unavailable: {available.unavailable[msg_type]}"
        )
    if cap.isolation == "thread":
        outcome = _do_in_thread(factory, cap, inp, job_id)
    else:
        outcome = _do_in_process(factory, cap, inp, job_id, cfg, redactor.scrub)
    outcome = redactor.outcome(outcome)
    bodies = events.job_events(
        cap,
        outcome,
        {**cap.echo_of(inp), **echo},
        inp,
        job_id=job_id,
        sender=cfg.host.instance,
        namespace=cfg.host.namespace,
    )
    for body in bodies:
        print(json.dumps(body, indent=2))
    return outcome


def _do_chain(
    cfg: configuration.Config,
    registry: Mapping[str, Any],
    chain: Any,
    raw: dict[str, Any],
    redactor: Any,
    job_id: str,
) -> Any:
    """Run a chain here: each step in order with ``opsagent do``'s one-capability run
    (each step's events printed as it ends), then the chain's event.  Nothing is
    journaled: a step that was interrupted is not resumed, and no dedup key is held
    against a host running the same work."""
    from opsagent.host import chains, events
    from opsagent.outcome import Outcome
    from opsagent.schema import InputError, structure

    try:
        inp = structure(raw, chain.input)
    except InputError as exc:
        raise _invalid(chain.msg_type, exc) from None
    plan = chains.plan(chain, inp, registry)
    if isinstance(plan, Outcome):
        outcome = plan
    else:
        results = []
        for n, planned in enumerate(plan, 1):
            sid = chains.step_id(job_id, n, planned.step)
            if planned.cap is None:
                step_outcome = Outcome.error(f"not run: {planned.missing}")
            else:
                try:
                    step_outcome = _do_one(
                        cfg,
                        planned.cap,
                        planned.body,
                        redactor,
                        sid,
                        {"chain": chain.msg_type, "chain_job_id": job_id},
                    )
                except _NotRun as exc:
                    step_outcome = Outcome.error(f"not run: {exc}")
            print(f"opsagent: step {sid} ended {step_outcome.status}", file=sys.stderr)
            results.append(chains.step_result(planned, sid, step_outcome))
        outcome = chains.summary(len(plan), results)
    for body in events.job_events(
        chain,
        outcome,
        chain.echo_of(inp),
        inp,
        job_id=job_id,
        sender=cfg.host.instance,
        namespace=cfg.host.namespace,
    ):
        print(json.dumps(body, indent=2))
    return outcome


def _do_in_thread(factory: jobs.JobFactory, cap: Any, inp: Any, job_id: str) -> Any:
    """Run a ``thread`` job here, as a worker thread of the host runs it: at its time limit
    it ends ``timeout`` and what the doer returns later is discarded."""
    import threading

    from opsagent.isolation import execute, proc
    from opsagent.outcome import Outcome

    limit = cap.time_limit_for(inp)
    job = factory.job(cap.msg_type, job_id, time_limit=limit)
    done: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: done.append(execute.call(cap, inp, job)), name="do", daemon=True
    )
    worker.start()
    worker.join(limit + cap.backstop)
    if done:
        return done[0]
    # Programs the doer started in sessions of their own go now; the thread, with the
    # process.
    proc.kill_live_groups()
    return Outcome.timeout(jobs.timed_out(cap, thread=True, limit=limit))


def _do_in_process(
    factory: jobs.JobFactory,
    cap: Any,
    inp: Any,
    job_id: str,
    cfg: configuration.Config,
    scrub: Any,
) -> Any:
    """Run a ``process`` job in a job process of its own, as the host runs it: its memory
    limit, its output, and its whole process group killed at the time limit."""
    import tempfile

    from opsagent.isolation import proc
    from opsagent.isolation.workers import process_outcome

    with tempfile.TemporaryDirectory(prefix="opsagent-do-") as tmp:
        result = Path(tmp) / "result.json"
        spec = factory.spec(
            cap.msg_type, job_id, inp, result=result, memory_limit=_memory_limit(cap, cfg) or 0
        )
        done = proc.run(
            [sys.executable, "-m", "opsagent.isolation.child"],
            env=factory.process_env(cap.msg_type, job_id),
            cwd=tmp,
            timeout=cap.time_limit_for(inp) + cap.backstop,
            grace=cfg.host.kill_grace_seconds,
            output_cap=cfg.host.output_cap_bytes,
            stdin_data=json.dumps(spec).encode(),
            on_line=lambda line: print(scrub(line), file=sys.stderr, flush=True),
        )
        return process_outcome(done, cap, job_id, result, cap.time_limit_for(inp))


def cmd_new(args: argparse.Namespace) -> int:
    from opsagent.cli import scaffold

    try:
        path = scaffold.new(
            scaffold.parse_answers(args.answers),
            output_dir=Path(args.output_dir),
            interactive=not args.no_input,
            overwrite=args.force,
        )
    except scaffold.ScaffoldError as exc:
        print(f"opsagent: {exc}", file=sys.stderr)
        return 1
    print(f"created {path}\nnext:\n{scaffold.next_steps(path)}")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from opsagent.cli import selftest

    if args.notify_test and not args.live:
        print("opsagent selftest: --notify-test posts through the webhooks: add --live")
        return 2
    try:
        cfg = _config(args)
    except configuration.ConfigError as exc:
        findings = [selftest.Finding("host", selftest.Check.fail("configuration", str(exc)))]
    else:
        _redactor(args)
        findings = selftest.run(
            cfg,
            capability=args.capability,
            live=args.live,
            live_timeout=args.timeout,
            notify_test=args.notify_test,
        )
    if args.json:
        print(json.dumps(selftest.to_json(findings), indent=2))
    else:
        print(selftest.table(findings))
    return 1 if selftest.failed(findings) else 0


def cmd_config(args: argparse.Namespace) -> int:
    from opsagent.cli import fromenv

    path = Path(args.from_env)
    try:
        text = path.read_text()
    except OSError as exc:
        print(f"opsagent config: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    registry = _registry(args)
    print(fromenv.convert(text, registry.capabilities, str(path)), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opsagent", description=__doc__)
    p.add_argument(
        "--config",
        help="TOML configuration file (default: $OPSAGENT_CONFIG, "
        "else built-in defaults and ACTIVEMQ_* variables)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the host in the foreground")
    r.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    r.add_argument("--strict", action="store_true", help="any broken plugin is fatal")
    r.set_defaults(func=cmd_run)
    pl = sub.add_parser("plugins", help="list capabilities and broken plugins")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)
    sc = sub.add_parser(
        "schedule", help="list schedules: next and last run, last outcome, runs skipped"
    )
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_schedule)
    s = sub.add_parser("schema", help="JSON Schema of a capability's input")
    s.add_argument("msg_type")
    s.set_defaults(func=cmd_schema)
    se = sub.add_parser("send", help="publish a request (key=value, key:=json)")
    se.add_argument("msg_type")
    se.add_argument("fields", nargs="*")
    se.add_argument(
        "--wait",
        action="store_true",
        help="wait for the outcome; exit status "
        "0 ok, 1 error, 2 unrecorded, 3 timeout, 4 rejected, 124 no answer",
    )
    se.add_argument("--timeout", type=float, default=600.0)
    se.add_argument(
        "--tries",
        type=int,
        default=5,
        help="tries to connect and publish (each confirmed by the broker), with backoff; "
        "exit status 75 only when every try failed",
    )
    se.set_defaults(func=cmd_send)
    mc = sub.add_parser(
        "mcp",
        help="an MCP server offering the capabilities of [mcp] expose as tools "
        "(stdio; --http: streamable HTTP); it holds no credential",
    )
    mc.add_argument("--http", action="store_true", help="streamable HTTP at /mcp, not stdio")
    mc.add_argument("--port", type=int, help="for --http (default: [mcp] http_port; 0: any)")
    mc.set_defaults(func=cmd_mcp)
    pi = sub.add_parser("ping", help="health_ping round trip; prints the latency")
    pi.add_argument("--timeout", type=float, default=10.0)
    pi.add_argument("--tries", type=int, default=3)
    pi.set_defaults(func=cmd_ping)
    d = sub.add_parser("do", help="run a capability once, locally, without a broker")
    d.add_argument("msg_type")
    d.add_argument("--json", default="{}", help="the input as a JSON object")
    d.set_defaults(func=cmd_do)
    cf = sub.add_parser(
        "config", help="the TOML equivalent of the old agent's environment file"
    )
    cf.add_argument(
        "--from-env",
        metavar="FILE",
        required=True,
        help="a KEY=VALUE file (production.env); read, never executed",
    )
    cf.set_defaults(func=cmd_config)
    st = sub.add_parser(
        "selftest",
        help="check plugins, declarations, samples, credentials, programs and directories; "
        "exit status 1 when anything fails",
    )
    st.add_argument("--capability", metavar="MSG_TYPE", help="check only this capability")
    st.add_argument(
        "--live", action="store_true", help="also a health_ping round trip through the broker"
    )
    st.add_argument(
        "--notify-test",
        action="store_true",
        help="with --live: also post a test message through each [[notify]] rule",
    )
    st.add_argument("--timeout", type=float, default=10.0, help="for --live (seconds)")
    st.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    st.set_defaults(func=cmd_selftest)
    n = sub.add_parser("new", help="a new capability distribution from the template")
    n.add_argument("answers", nargs="*", metavar="KEY=VALUE", help="e.g. msg_type=hello_world")
    n.add_argument("-o", "--output-dir", default=".", help="where to create it (default: .)")
    n.add_argument("--no-input", action="store_true", help="ask nothing; defaults for the rest")
    n.add_argument("--force", action="store_true", help="write into an existing directory")
    n.set_defaults(func=cmd_new)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
