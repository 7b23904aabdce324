"""``opsagent selftest``: what is wrong, found before a job fails.

Checked, each reported as ``ok``, ``warn`` or ``fail``:

- every host setting and capability setting not left at its built-in default, with
  where it came from: the config file or an environment variable (the old agent's
  ``SWF_MONITOR_URL``, ``RUCIO_URL``, ``EPICPROD_*_TIMEOUT``...); each capability's time
  limit with its origin; each credential with where it was found;
- the configuration, and the cache and state directories creatable and writable by the
  running user (the old agent broke in production on exactly this);
- each plugin loaded on its own, then all of them together (two claiming one msg_type);
- per capability: its declaration with this host's configuration section and input
  schema; each sample input round-tripped through the schema; each credential present,
  of safe mode and owner, readable, and its expiry -- never its value; the programs it
  needs on the jobs' ``PATH``; its own checks through the ``capability_checks`` hook;
- who may call each capability (``allow_users``): every capability open to any broker
  user is listed as a warning, so an operator sees what anyone who can write to the
  queue may ask for;
- each ``[[notify]]`` rule: its webhook URL credential present and holding a URL (never
  shown);
- with ``live``: a ``health_ping`` round trip through the broker to the running host,
  and whether the broker stamps the sender's user on a message (a probe to a queue of
  the selftest's own): without it every capability with ``allow_users`` refuses all;
  with ``notify_test`` too, a test message posted through each ``[[notify]]`` rule.

Every detail goes through redaction, in case a plugin's check echoes a secret.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import attrs

from opsagent import schema
from opsagent.capability import Capability, DeclarationError
from opsagent.checks import Check
from opsagent.credentials import store as creds
from opsagent.credentials.redaction import Redactor, declared_secrets
from opsagent.host import config as configuration
from opsagent.host import plugins
from opsagent.host.access import Access, AccessError
from opsagent.isolation.jobs import JobFactory, effective
from opsagent.job import Job
from opsagent.setting import origins

EXPIRY_WARNING = creds.EXPIRY_WARNING


@attrs.frozen
class Finding:
    """A check about one subject (``host``, ``plugin <name>``, a msg_type, ``broker``)."""

    subject: str
    check: Check

    def to_json(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "check": self.check.name,
            "status": self.check.status,
            "detail": self.check.detail,
        }


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def writable(path: Path | str, name: str = "directory") -> Check:
    """Whether the running user can write in ``path``, or create it (tried, then undone).

    For plugins' own checks too: ``register(writable(job.cache_dir / "panda-logs"))``.
    """
    path = Path(path)
    who = _user()
    if path.exists():
        if not path.is_dir():
            return Check.fail(name, f"{path} exists and is not a directory")
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".opsagent-selftest-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return Check.fail(name, f"{path} is not writable by {who}: {exc.strerror}")
        return Check.ok(name, f"{path} is writable by {who}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return Check.fail(name, f"{path} cannot be created: {parent} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".opsagent-selftest-"))
    except OSError as exc:
        return Check.fail(
            name, f"{path} does not exist and {who} cannot create it in {parent}: {exc.strerror}"
        )
    return Check.ok(name, f"{path} does not exist yet; {who} can create it in {parent}")


# -- one capability -----------------------------------------------------------------------


def _settings(cfg: configuration.Config) -> list[Check]:
    """Each effective host setting and where it came from; what was left at its built-in
    default is not listed (``opsagent selftest --json`` lists everything)."""
    return [
        Check.ok(o.key, f"{o.value} ({o.origin})")
        for o in configuration.setting_origins(cfg)
        if o.origin != "default"
    ]


def _capability_settings(cap: Capability, cfg: configuration.Config, section: Any) -> list[Check]:
    """Where the capability's configuration came from, key by key (defaults left out)."""
    if section is None:
        return []
    table = configuration.section_table(cfg, cap.msg_type)
    return [
        Check.ok(f"setting {o.key}", f"{o.value} ({o.origin})")
        for o in origins(section, table, cfg.source)
        if o.origin != "default"
    ]


def _declaration(cap: Capability, cfg: configuration.Config) -> tuple[Check, Any]:
    try:
        section = (
            None
            if cap.control
            else configuration.section(cfg, cap.msg_type, cap.config, cap.config_section)
        )
        schema.json_schema(cap.input, title=cap.msg_type)
    except configuration.ConfigError as exc:
        return Check.fail("declaration", str(exc)), None
    except Exception as exc:  # noqa: BLE001 - a declaration the schema export chokes on
        return Check.fail("declaration", f"input schema: {type(exc).__name__}: {exc}"), None
    events = ", ".join(f"{k}: {v}" for k, v in sorted(cap.events.items()))
    where = f"{cap.distribution} {cap.version}".strip()
    detail = (
        f"{where}; time limit {cap.time_limit:g} s "
        f"({configuration.time_limit_origin(cfg, cap)}), "
        f"{'inline' if cap.control else cap.isolation}, concurrency {cap.concurrency}; "
        f"events {events}"
    )
    return Check.ok("declaration", detail), section


def _samples(cap: Capability) -> list[Check]:
    if not cap.samples:
        return [Check.warn("samples", "none declared: add samples=(...) so this can check them")]
    out = []
    for i, sample in enumerate(cap.samples, 1):
        name = f"sample {i}"
        try:
            inp = schema.structure(dict(sample), cap.input)
            wire = json.loads(json.dumps(schema.unstructure(inp)))
            again = schema.structure(wire, cap.input)
            cap.echo_of(inp)
            cap.key_of(inp)
        except schema.InputError as exc:
            out.append(Check.fail(name, f"does not fit the input schema: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - echo/dedup_key of the declaration
            out.append(Check.fail(name, f"{type(exc).__name__}: {exc}"))
            continue
        if again != inp:
            out.append(Check.fail(name, f"changes on a round trip: {inp!r} -> {again!r}"))
        else:
            out.append(Check.ok(name, json.dumps(wire, sort_keys=True)))
    return out


def _credentials(
    cap: Capability, cfg: configuration.Config, now: float
) -> tuple[list[Check], dict[str, creds.Credential]]:
    out: list[Check] = []
    usable: dict[str, creds.Credential] = {}
    for name in cap.credentials:
        found = creds.expiry(
            name, cfg.credentials, now=now, optional=name in cap.optional_credentials
        )
        if found.usable is not None:
            usable[name] = found.usable
        check = {"ok": Check.ok, "warning": Check.warn, "error": Check.fail}[found.level]
        out.append(check(f"credential {name}", found.detail))
    return out, usable


def _programs(cap: Capability, env: dict[str, str]) -> list[Check]:
    path = env.get("PATH", os.defpath)
    out = []
    for program in cap.programs:
        found = shutil.which(program, path=path)
        if found:
            out.append(Check.ok(f"program {program}", found))
        else:
            out.append(Check.fail(f"program {program}", f"not found on the jobs' PATH ({path})"))
    return out


def _declared_checks(cap: Capability, job: Job) -> list[Check]:
    """What the declaration's ``checks(job)`` finds (a program capability: is its
    program there and executable, is its working directory there)."""
    if cap.checks is None:
        return []
    try:
        out = list(cap.checks(job))
    except Exception as exc:  # noqa: BLE001 - a broken check is a failed check
        return [Check.fail("own checks", f"checks raised {type(exc).__name__}: {exc}")]
    return [
        c if isinstance(c, Check) else Check.fail("own checks", f"gave {type(c).__name__}")
        for c in out
    ]


def _own_checks(
    cap: Capability, registry: plugins.Registry, job: Job, live: bool = False
) -> list[Check]:
    plugin = registry.plugin_of(cap)
    if registry.pm is None or plugin is None:
        return []
    out: list[Check] = []
    try:
        plugins.call_one(
            registry.pm,
            "capability_checks",
            plugin,
            capability=cap,
            job=job,
            register=out.append,
            live=live,
        )
    except Exception as exc:  # noqa: BLE001 - a broken check is a failed check
        out.append(
            Check.fail("own checks", f"capability_checks raised {type(exc).__name__}: {exc}")
        )
    for i, item in enumerate(out):
        if not isinstance(item, Check):
            out[i] = Check.fail("own checks", f"registered {type(item).__name__}, not a Check")
    return out


def check_capability(
    cap: Capability,
    cfg: configuration.Config,
    registry: plugins.Registry,
    now: float,
    live: bool = False,
) -> list[Check]:
    """Every check of one capability (with this host's overrides applied)."""
    try:
        cap = effective(cap, cfg)
    except DeclarationError as exc:
        return [Check.fail("declaration", f"{cfg.source}: [capability.*] override: {exc}")]
    declaration, section = _declaration(cap, cfg)
    out = [declaration, *_capability_settings(cap, cfg, section), *_samples(cap)]
    if cap.control:
        return out
    found, usable = _credentials(cap, cfg, now)
    out += found
    # The job the doer would get, made as the host makes it.
    jobs = JobFactory(
        {cap.msg_type: cap},
        cache_dir=cfg.cache_dir,
        state_dir=cfg.state_dir,
        env_allow=cfg.host.env_allow,
        configs={cap.msg_type: section},
        credentials={cap.msg_type: usable},
    )
    job = jobs.job(cap.msg_type, "selftest")
    out += _programs(cap, dict(job.env))
    if declaration.status == "fail":
        return out
    return out + _declared_checks(cap, job) + _own_checks(cap, registry, job, live)


# -- the whole run ---------------------------------------------------------------------------


def _each_plugin(eps: Iterable[EntryPoint]) -> list[tuple[EntryPoint, plugins.Registry]]:
    out = []
    for ep in eps:
        out.append((ep, plugins.load(entry_points_=[ep])))
    return out


def _live(cfg: configuration.Config, timeout: float) -> Check:
    from opsagent.cli.client import Client

    try:
        client = Client(cfg.broker, connect_tries=2)
    except ConnectionError as exc:
        return Check.fail("health_ping", str(exc))
    try:
        started = time.perf_counter()
        rid = client.request({"msg_type": "health_ping", "namespace": cfg.host.namespace})
        answer = client.wait(rid, timeout)
        took = (time.perf_counter() - started) * 1000
    finally:
        client.close()
    if answer is None or answer.get("msg_type") != "pong":
        got = "nothing" if answer is None else answer.get("msg_type")
        return Check.fail(
            "health_ping",
            f"no pong on {cfg.broker.queue} within {timeout:g} s (got {got}); is the host running?",
        )
    return Check.ok(
        "health_ping", f"pong from {answer.get('agent')} (pid {answer.get('pid')}) in {took:.1f} ms"
    )


def _access(cfg: configuration.Config, registry: plugins.Registry, only: str | None) -> list[Check]:
    """Who may call each capability (or ``only`` that one); any broker user is a warning
    (health_ping aside)."""
    try:
        access = Access.from_tables(cfg.capability, registry.capabilities, cfg.broker.user)
    except AccessError as exc:
        return [Check.fail("allow_users", str(exc))]
    out = []
    for msg_type in sorted(registry.capabilities):
        if only and msg_type != only:
            continue
        who = access.describe(msg_type)
        if who != "anyone":
            out.append(Check.ok(msg_type, f"only broker user(s): {who}"))
        elif msg_type == "health_ping":
            out.append(Check.ok(msg_type, "anyone (liveness only)"))
        else:
            out.append(
                Check.warn(
                    msg_type,
                    "anyone who can write to the queue; limit it with "
                    f"[capability.{msg_type}] allow_users = [...]",
                )
            )
    return out


def _stamping(cfg: configuration.Config, timeout: float) -> Check:
    """Send a probe to a queue of our own, as the configured broker user, and read it
    back the way the host reads a request's sender."""
    import threading
    import uuid

    from opsagent.transport.base import Delivery
    from opsagent.transport.stomp import StompTransport

    probe = f"/queue/opsagent.cli.selftest.{uuid.uuid4().hex}"
    broker = attrs.evolve(cfg.broker, queue=probe, exclusive=False)
    transport = StompTransport(broker, prefetch=1, client_id="opsagent-selftest")
    got: list[Delivery] = []
    arrived = threading.Event()

    def on_delivery(delivery: Delivery) -> None:
        got.append(delivery)
        transport.ack(delivery)
        arrived.set()

    try:
        if not transport.ensure(on_delivery):
            return Check.fail("sender stamping", f"cannot connect: {transport.last_error}")
        transport.send(probe, b"{}", {"JMSXUserID": "forged", "_AMQ_VALIDATED_USER": "forged"})
        if not arrived.wait(timeout):
            return Check.fail("sender stamping", f"the probe sent to {probe} never came back")
    finally:
        transport.close()
    user, header, server = got[0].user, transport.user_header, transport.server or "?"
    if user is not None and user == cfg.broker.user:
        return Check.ok("sender stamping", f"{server} stamps the sender ({header}: {user})")
    if user is None:
        why = f"no {header} on the probe" if header else "unknown broker: set [broker] user_header"
    else:
        why = f"{header} says {user!r}, but this host logs in as {cfg.broker.user!r}"
    return Check.fail(
        "sender stamping",
        f"{server} is not stamping the sender ({why}): capabilities with allow_users "
        f"(shutdown and prune_cache by default) refuse every request; enable "
        f"populateJMSXUserID (ActiveMQ Classic) or populate-validated-user (Artemis), "
        f"see docs/operations.md",
    )


def _renewal(cfg: configuration.Config, name: str, *, live: bool, now: float) -> list[Check]:
    """Can the host renew this token: its file, its refresh token or secret, the issuer."""
    from opsagent.credentials import renewal

    try:
        r = renewal.Renewer(name, cfg.renewal[name], cfg.credentials)
    except ValueError as exc:
        return [Check.fail("configuration", str(exc))]
    out: list[Check] = []
    rc = r.cfg
    parent = r.path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        out.append(Check.fail("directory", f"{parent}: the host cannot write there"))
    elif parent.stat().st_mode & 0o022:
        out.append(Check.fail("directory", f"{parent} is writable by others: chmod go-w"))
    else:
        out.append(Check.ok("directory", f"{parent}: writable by the host only"))
    try:
        token: renewal.TokenFile | None = renewal.TokenFile.parse(r.path.read_bytes())
    except FileNotFoundError:
        token = None
    except (OSError, ValueError) as exc:
        token = None
        if rc.grant == "refresh_token":
            out.append(Check.fail("token", f"{r.path}: {exc}"))
    if token is None and rc.grant == "refresh_token" and not any(c.name == "token" for c in out):
        out.append(Check.fail("token", f"{r.path}: no token; the operator must log in"))
    elif token is not None:
        left = token.expires_at - now
        state = "expired" if left <= 0 else f"valid for {left / 60:.0f} min"
        due = max(0.0, r.due_at(token) - now)
        detail = f"{state}; renewed by {rc.grant} in {due / 60:.0f} min"
        if rc.grant == "refresh_token" and not token.data.get("refresh_token"):
            out.append(Check.fail("token", f"{detail}, but the file has no refresh_token"))
        elif left <= 0 and rc.grant == "refresh_token":
            out.append(Check.warn("token", f"{detail} (if its refresh token is still valid)"))
        else:
            out.append(Check.ok("token", detail))
    else:
        out.append(Check.ok("token", "none yet: the host makes it at start"))
    if rc.client_secret_credential:
        try:
            r.client_secret()
            out.append(Check.ok("client secret", f"credential {rc.client_secret_credential}"))
        except renewal.RenewalError as exc:
            out.append(Check.fail("client secret", str(exc)))
    if live:
        import requests

        try:
            with requests.Session() as session:
                endpoint = r.token_endpoint(session)
            out.append(Check.ok("issuer", f"token endpoint {endpoint}"))
        except renewal.RenewalError as exc:
            out.append(Check.fail("issuer", str(exc)))
    return out


def _notify(
    cfg: configuration.Config, urls: dict[str, str], problems: dict[str, str]
) -> list[Check]:
    from opsagent.reporting.notifications import shown

    out = []
    for rule in cfg.notify:
        if rule.name in problems:
            out.append(Check.fail(rule.name, problems[rule.name]))
        else:
            out.append(
                Check.ok(
                    rule.name,
                    f"{rule.kind} webhook at {shown(urls[rule.name])} (credential "
                    f"{rule.url_credential}); msg_types {', '.join(rule.msg_types)}; outcomes "
                    f"{', '.join(rule.outcomes)}",
                )
            )
    return out


def _notify_test(cfg: configuration.Config, urls: dict[str, str]) -> list[Check]:
    """Post a test message through each rule whose URL is known, now."""
    from opsagent.reporting.notifications import Notifications, shown

    sender = Notifications(
        [r for r in cfg.notify if r.name in urls],
        outbox=cfg.state_dir / "notifications.sqlite3",  # not opened: posted directly
        urls=urls,
        instance=cfg.host.instance,
        namespace=cfg.host.namespace,
    )
    out = []
    for name in sender.rules:
        posted = sender.post_test(name)
        where = shown(urls[name])
        if posted.ok:
            out.append(Check.ok(f"test {name}", f"posted to {where} (HTTP {posted.status})"))
        else:
            out.append(Check.fail(f"test {name}", f"{where} refused it: {posted.problem}"))
    return out


def run(
    cfg: configuration.Config,
    *,
    capability: str | None = None,
    live: bool = False,
    live_timeout: float = 10.0,
    notify_test: bool = False,
    entry_points_: Iterable[EntryPoint] | None = None,
) -> list[Finding]:
    """Every finding, in the order a person reads them."""
    now = time.time()
    found: list[Finding] = []

    def add(subject: str, checks: Iterable[Check]) -> None:
        found.extend(Finding(subject, c) for c in checks)

    add("host", [Check.ok("configuration", cfg.source)])
    add("setting", _settings(cfg))
    add(
        "host",
        [writable(cfg.cache_dir, "cache directory"), writable(cfg.state_dir, "state directory")],
    )
    eps = list(entry_points(group=plugins.GROUP) if entry_points_ is None else entry_points_)
    registry = plugins.load(
        entry_points_=eps,
        allow=cfg.capabilities.allow,
        deny=cfg.capabilities.deny,
        programs=cfg.program,
        source=cfg.source,
    )
    # Before any plugin check runs: a capability_checks hook may log its configuration.
    redactor = Redactor(creds.secrets_of(cfg.credentials))
    redactor.learn(cfg.broker.password)
    for msg_type, cap in registry.capabilities.items():
        table = configuration.section_table(cfg, msg_type, cap.config_section)
        redactor.learn(*declared_secrets(cap.config, table))
    from opsagent.host.observers import notify_urls
    from opsagent.reporting.notifications import url_secrets

    urls, url_problems = notify_urls(cfg)
    for url in urls.values():
        redactor.learn(*url_secrets(url))
    redactor.install()
    alone = _each_plugin(eps)
    wanted = registry.capabilities.get(capability) if capability else None
    for ep, reg in alone:
        if capability:
            # Only the plugin that provides it, or any broken one that might have.
            if wanted is not None and wanted.entry_point != ep.value.split(":")[0]:
                continue
            if wanted is None and not reg.broken:
                continue
        for b in reg.broken:
            add(
                f"plugin {ep.name}",
                [Check.fail("load", f"{b.distribution} {b.version}: {b.error}")],
            )
        if not reg.broken:
            types_ = ", ".join(sorted(reg.capabilities)) or "no capabilities"
            dist = next(iter(reg.capabilities.values()), None)
            where = f"{dist.distribution} {dist.version}: " if dist else ""
            add(f"plugin {ep.name}", [Check.ok("load", f"{where}{types_}")])
    alone_broken = {b.name for _, reg in alone for b in reg.broken}
    for b in registry.broken:
        if b.name not in alone_broken:
            add(f"plugin {b.name}", [Check.fail("load with the others", b.error)])
    if capability and wanted is None:
        known = ", ".join(sorted(registry.capabilities))
        add(capability, [Check.fail("installed", f"no capability {capability!r}; known: {known}")])
    for msg_type in sorted(registry.capabilities):
        if capability and msg_type != capability:
            continue
        add(msg_type, check_capability(registry.capabilities[msg_type], cfg, registry, now, live))
    add("access", _access(cfg, registry, capability))
    for name in sorted(cfg.renewal) if not capability else ():
        add(f"renewal {name}", _renewal(cfg, name, live=live, now=now))
    if cfg.notify and not capability:
        add("notify", _notify(cfg, urls, url_problems))
    if live:
        add("broker", [_live(cfg, live_timeout), _stamping(cfg, live_timeout)])
        if notify_test:
            add("notify", _notify_test(cfg, urls))
    return [
        attrs.evolve(f, check=attrs.evolve(f.check, detail=redactor.scrub(f.check.detail)))
        for f in found
    ]


def failed(findings: Iterable[Finding]) -> bool:
    return any(f.check.status == "fail" for f in findings)


def summary(findings: list[Finding]) -> dict[str, int]:
    out = {"ok": 0, "warn": 0, "fail": 0}
    for f in findings:
        out[f.check.status] += 1
    return out


def to_json(findings: list[Finding]) -> dict[str, Any]:
    """The JSON for scripts: ``ok``, counts, and every finding."""
    return {
        "ok": not failed(findings),
        "summary": summary(findings),
        "checks": [f.to_json() for f in findings],
    }


def table(findings: list[Finding]) -> str:
    """The table for people: one line per check, failures in capitals."""
    shown = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
    subj = max([len("SUBJECT"), *(len(f.subject) for f in findings)])
    name = max([len("CHECK"), *(len(f.check.name) for f in findings)])
    lines = [f"{'SUBJECT':<{subj}}  {'CHECK':<{name}}  {'STATUS':<6}  DETAIL"]
    for f in findings:
        lines.append(
            f"{f.subject:<{subj}}  {f.check.name:<{name}}  {shown[f.check.status]:<6}  "
            f"{f.check.detail}"
        )
    counts = summary(findings)
    lines.append("")
    lines.append(
        f"{len(findings)} checks: {counts['ok']} ok, {counts['warn']} warning(s), "
        f"{counts['fail']} failed"
    )
    return "\n".join(lines)
