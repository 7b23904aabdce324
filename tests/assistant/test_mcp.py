"""``opsagent mcp`` through the SDK's own client, over stdio and streamable HTTP, in front of
a host on the real broker.

The MCP server logs in as the web tier (``webtier``); the host allows it ``test_echo``,
``test_sleep``, ``test_sleep_thread`` and ``test_env``, and allows ``test_noop`` only
to its own user, so a ``test_noop`` call is refused by ``allow_users``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from opsagent.testing import toml_text
from support import OPSAGENT, ROOT, SITECAPS, Caller, HostProcess, login

pytestmark = pytest.mark.broker

EXPOSED = ["test_echo", "test_sleep", "test_sleep_thread", "test_noop", "test_env"]
ALLOWED_TO_WEB = ["test_echo", "test_sleep", "test_sleep_thread", "test_env", "request_status"]
SECRET = "s3cret-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, broker: dict[str, str]) -> Iterator[dict]:
    """A host with a credential, and a directory every user may read for the MCP side."""
    tmp = tmp_path_factory.mktemp("mcp")
    cred = tmp / "testcred"
    cred.write_text(SECRET)
    cred.chmod(0o600)
    extra: dict[str, dict[str, Any]] = {
        f"capability.{m}": {"allow_users": ["webtier"]} for m in ALLOWED_TO_WEB
    }
    extra["capability.test_noop"] = {"allow_users": [login(broker, "host")["user"]]}
    extra["credentials.testcred"] = {"file": str(cred)}
    host = HostProcess(tmp / "host", broker, extra=extra).start()
    # pytest's temporary directories are private to their owner; the MCP server may run
    # as another user.
    shared = Path(tempfile.mkdtemp(prefix="opsagent-mcp-test-"))
    shared.chmod(0o755)
    try:
        yield {"host": host, "cred": cred, "shared": shared, "broker": broker}
    finally:
        host.stop()
        for f in shared.iterdir():
            f.unlink()
        shared.rmdir()


def mcp_config(world: dict, *, wait_seconds: float = 20, password: bool = True) -> Path:
    broker, host = world["broker"], world["host"]
    web = login(broker, "web")
    mcp: dict[str, Any] = {"expose": EXPOSED, "broker_user": web["user"],
                           "wait_seconds": wait_seconds, "progress_seconds": 0.2}
    if password:
        mcp["broker_password"] = web["password"]
    raw = {
        "broker": {"hosts": [f"{broker['ACTIVEMQ_HOST']}:{broker['ACTIVEMQ_PORT']}"],
                   "queue": host.queue, "topic": host.topic},
        # Named, never read: the MCP server does not touch credentials.
        "credentials.testcred": {"file": str(world["cred"])},
        "mcp": mcp,
    }
    path = world["shared"] / f"mcp-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(toml_text(raw))
    path.chmod(0o644)
    return path


class HttpServer:
    """``opsagent mcp --http --port 0`` in a subprocess; ``url`` once it listens."""

    def __init__(self, config: Path, env: dict[str, str], user: int | None = None,
                 python: str = sys.executable) -> None:
        self.stderr = config.with_suffix(".log")
        self._err = open(self.stderr, "wb")  # noqa: SIM115 - closed in stop()
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs = {"user": user, "group": user, "extra_groups": []}
        argv = [python, "-m", "opsagent.cli.main", "--config", str(config), "mcp", "--http",
                "--port", "0"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err, env=env, cwd="/", **kwargs)
        end = time.monotonic() + 30
        while not (found := re.search(r"streamable HTTP on (\S+)", self.log())):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise AssertionError(f"opsagent mcp did not listen:\n{self.log()}")
            time.sleep(0.05)
        self.url = found.group(1)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def base_env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(SITECAPS), "HOME": "/"}


@pytest.fixture(scope="module")
def http_server(world: dict) -> Iterator[HttpServer]:
    server = HttpServer(mcp_config(world, wait_seconds=20), base_env())
    yield server
    server.stop()


def stdio_params(world: dict, wait_seconds: float) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "opsagent.cli.main", "--config",
              str(mcp_config(world, wait_seconds=wait_seconds)), "mcp"],
        env=base_env(),
    )


class Held:
    """An SDK client kept open across the module's tests, on an event loop of its own (a
    server started once instead of once per test); its calls are made from any loop."""

    def __init__(self, server: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def hold() -> None:
            try:
                async with Client(server) as client:
                    self.client, self.stopping = client, asyncio.Event()
                    ready.set_result(None)
                    await self.stopping.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                raise

        self.held = asyncio.run_coroutine_threadsafe(hold(), self.loop)
        ready.result(60)

    async def _on_loop(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def list_tools(self) -> Any:
        return await self._on_loop(self.client.list_tools())

    async def call_tool(self, *args: Any, **kwargs: Any) -> Any:
        return await self._on_loop(self.client.call_tool(*args, **kwargs))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        with contextlib.suppress(Exception):
            self.held.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def held_stdio(world: dict) -> Iterator[Held]:
    held = Held(stdio_params(world, 20))
    yield held
    held.close()


@pytest.fixture(scope="module")
def held_http(http_server: HttpServer) -> Iterator[Held]:
    held = Held(http_server.url)
    yield held
    held.close()


@pytest.fixture(params=["stdio", "http"])
def connect(request: pytest.FixtureRequest, world: dict):
    """``connect(wait_seconds=...)``: an async context manager giving an SDK client: the
    module's own for the default wait, else a server started for the test."""

    @contextlib.asynccontextmanager
    async def make(wait_seconds: float = 20) -> AsyncIterator[Any]:
        if wait_seconds == 20:
            yield request.getfixturevalue(f"held_{request.param}")
        elif request.param == "stdio":
            async with Client(stdio_params(world, wait_seconds)) as client:
                yield client
        else:
            server = HttpServer(mcp_config(world, wait_seconds=wait_seconds), base_env())
            try:
                async with Client(server.url) as client:
                    yield client
            finally:
                server.stop()

    return make


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.fixture(scope="module")
def printed_schemas() -> dict[str, dict[str, Any]]:
    """What ``opsagent schema`` prints for each exposed capability."""
    env = {**os.environ, "PYTHONPATH": str(SITECAPS)}
    procs = {m: subprocess.Popen([*OPSAGENT, "schema", m], stdout=subprocess.PIPE, env=env)
             for m in EXPOSED}
    return {m: json.loads(p.communicate(timeout=60)[0]) for m, p in procs.items()}


def test_tools_are_the_exposed_capabilities_with_the_schemas_opsagent_schema_prints(
        connect, printed_schemas):
    async def scenario() -> list[Any]:
        async with connect() as client:
            return (await client.list_tools()).tools

    tools = {t.name: t for t in run(scenario())}
    assert sorted(tools) == sorted([*EXPOSED, "opsagent_request_status"])
    for name in EXPOSED:
        assert tools[name].input_schema == printed_schemas[name]
        assert tools[name].description == name  # the test capabilities declare none
        event = tools[name].output_schema["anyOf"][0]
        assert event["properties"]["request"] == {"const": name}
    assert tools["test_echo"].output_schema["anyOf"][0]["properties"]["msg_type"] == {
        "enum": ["test_echo_failed", "test_echoed"]}
    assert "health_ping" not in tools and "shutdown" not in tools


def test_a_call_runs_on_the_host_and_returns_its_terminal_event(connect):
    async def scenario() -> Any:
        async with connect() as client:
            return await client.call_tool("test_echo", {"text": "hello"})

    result = run(scenario())
    assert not result.is_error
    event = result.structured_content
    assert event["msg_type"] == "test_echoed" and event["ok"] is True
    assert event["text"] == "hello" and event["outcome"] == "ok"
    assert json.loads(result.content[0].text) == event


def test_bad_input_is_refused_locally_with_the_hosts_path_errors(connect, world):
    async def scenario() -> tuple[Any, Any]:
        async with connect() as client:
            wrong = await client.call_tool("test_sleep", {"seconds": "soon", "marker": "../x"})
            routed = await client.call_tool("test_echo", {"reply_to": "/queue/elsewhere"})
            return wrong, routed

    wrong, routed = run(scenario())
    assert wrong.is_error
    body = wrong.structured_content
    assert body["msg_type"] == "request_rejected" and body["code"] == "invalid"
    assert any(e.startswith("$.seconds:") for e in body["errors"]), body
    assert any(e.startswith("$.marker:") for e in body["errors"]), body
    # The same input sent to the host directly is refused with the same errors.
    caller = Caller(world["broker"], world["host"].queue, world["host"].topic)
    try:
        rid = caller.send("test_sleep", {"seconds": "soon", "marker": "../x"})
        assert caller.wait_event(rid)["errors"] == body["errors"]
    finally:
        caller.close()
    assert routed.is_error
    assert routed.structured_content["errors"] == [
        "$.reply_to: set by the MCP server, not by the caller; leave it out"]


def test_a_capability_allow_users_does_not_open_to_the_mcp_user_is_refused_by_the_host(connect):
    async def scenario() -> Any:
        async with connect() as client:
            return await client.call_tool("test_noop", {})

    result = run(scenario())
    assert result.is_error
    body = result.structured_content
    assert body["msg_type"] == "request_rejected" and body["code"] == "forbidden"
    assert "'webtier' may not call test_noop" in body["reason"]


def test_a_job_that_times_out_on_the_host_is_an_error_result(connect):
    async def scenario() -> Any:
        async with connect() as client:
            return await client.call_tool("test_sleep_thread", {"seconds": 1.5})

    result = run(scenario())
    assert result.is_error
    assert result.structured_content["outcome"] == "timeout"
    assert result.structured_content["ok"] is False


def test_a_call_that_outlasts_the_wait_says_still_running_and_the_status_tool_ends_it(connect):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def scenario() -> tuple[Any, Any, Any]:
        async with connect(wait_seconds=0.6) as client:
            first = await client.call_tool("test_sleep", {"seconds": 1.5, "key": uuid.uuid4().hex},
                                           progress_callback=on_progress)
            request_id = first.structured_content["request_id"]
            end = time.monotonic() + 30
            while True:
                later = await client.call_tool("opsagent_request_status",
                                               {"request_id": request_id})
                if "msg_type" in (later.structured_content or {}) or time.monotonic() > end:
                    break
                await asyncio.sleep(0.2)
            unknown = await client.call_tool("opsagent_request_status",
                                             {"request_id": "never-sent-" + uuid.uuid4().hex})
            return first, later, unknown

    first, later, unknown = run(scenario())
    assert not first.is_error
    pending = first.structured_content
    assert pending["state"] == "sent" and pending["request"] == "test_sleep"
    assert f"still running: test_sleep request id {pending['request_id']}" in pending["message"]
    assert progress, "no progress notification while waiting"
    assert all(total == 2.0 for _, total, _ in progress)
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert not later.is_error
    assert later.structured_content["msg_type"] == "test_slept"
    assert later.structured_content["job_id"] == pending["request_id"]
    assert unknown.structured_content["state"] == "unknown"


def test_the_status_tool_asks_the_hosts_journal_for_a_request_it_did_not_send(connect, world):
    caller = Caller(world["broker"], world["host"].queue, world["host"].topic)
    try:
        rid = caller.send("test_echo", {"text": "sent elsewhere"})
        caller.wait_event(rid)
    finally:
        caller.close()

    async def scenario() -> Any:
        async with connect() as client:
            # The host commits a job's end to its journal just after publishing its event.
            end = time.monotonic() + 10
            while True:
                result = await client.call_tool("opsagent_request_status", {"request_id": rid})
                if "msg_type" in result.structured_content or time.monotonic() > end:
                    return result
                assert result.structured_content["state"] == "accepted", result
                await asyncio.sleep(0.05)

    result = run(scenario())
    assert not result.is_error, result.structured_content
    assert result.structured_content["msg_type"] == "test_echoed"
    assert result.structured_content["text"] == "sent elsewhere"


def test_a_burst_of_concurrent_calls_each_gets_its_own_answer(connect):
    async def scenario() -> list[Any]:
        async with connect() as client:
            return await asyncio.gather(*(client.call_tool("test_echo", {"text": f"n{i}"})
                                          for i in range(30)))

    results = run(scenario())
    assert [r.structured_content["text"] for r in results] == [f"n{i}" for i in range(30)]
    assert all(not r.is_error for r in results)
    assert len({r.structured_content["job_id"] for r in results}) == 30


def test_the_mcp_server_refuses_to_expose_a_control_capability_or_log_in_as_the_host(world):
    config = mcp_config(world)
    text = config.read_text()
    exposing = config.with_name("exposing.toml")
    exposing.write_text(text.replace('"test_echo",', '"shutdown", "test_echo",'))
    out = subprocess.run([*OPSAGENT, "--config", str(exposing), "mcp"], capture_output=True,
                         text=True, env=base_env(), stdin=subprocess.DEVNULL, timeout=60)
    assert out.returncode == 78
    assert "shutdown is a control capability of the host" in out.stderr
    host_user = login(world["broker"], "host")["user"]
    as_host = config.with_name("as-host.toml")
    as_host.write_text(text.replace('broker_user = "webtier"', f'broker_user = "{host_user}"')
                       .replace("[broker]\n", f'[broker]\nuser = "{host_user}"\n'))
    out = subprocess.run([*OPSAGENT, "--config", str(as_host), "mcp"], capture_output=True,
                         text=True, env=base_env(), stdin=subprocess.DEVNULL, timeout=60)
    assert out.returncode == 78
    assert "is the host's own broker user" in out.stderr


def _socket_peers(pid: int) -> list[tuple[str, int, str, int, str]]:
    """(local address, port, remote address, port, state) of the TCP sockets ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    peers = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                local, remote = cols[1].split(":"), cols[2].split(":")
                peers.append((local[0], int(local[1], 16), remote[0], int(remote[1], 16),
                              cols[3]))
    return peers


def _as_nobody(nobody: int) -> dict[str, str] | None:
    """The variables that let ``nobody`` run ``opsagent``: this interpreter when it may run
    it, else the system's Python of the same version with this one's packages and the
    source tree on ``PYTHONPATH``; ``None`` when neither runs."""
    core = str(ROOT / "core")
    purelib = sysconfig.get_paths()["purelib"]
    system = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/bin")
    for python, path in ((sys.executable, [str(SITECAPS)]),
                         (system, [core, purelib, str(SITECAPS)])):
        if python is None:
            continue
        env = {**base_env(), "PYTHONPATH": os.pathsep.join(path)}
        try:
            probe = subprocess.run([python, "-c", "import opsagent.cli.main, mcp"], env=env,
                                   user=nobody, group=nobody, extra_groups=[], cwd="/",
                                   capture_output=True)
        except PermissionError:
            continue
        if probe.returncode == 0:
            return {**env, "OPSAGENT_TEST_PYTHON": python}
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="running the MCP server as another Unix user "
                    "(to show it cannot read a credential) needs root")
def test_the_mcp_process_holds_no_credential_and_talks_only_to_the_broker(world):
    broker = world["broker"]
    cred: Path = world["cred"]
    web_password = login(broker, "web")["password"]
    planted = {
        "X509_USER_PROXY": str(cred),
        "PANDA_AUTH_ID_TOKEN": SECRET,
        "PANDA_CONFIG_ROOT": str(cred.parent),
        "SWF_API_TOKEN": SECRET,
        "BEARER_TOKEN_FILE": str(cred),
        "ACTIVEMQ_PASSWORD": broker["ACTIVEMQ_PASSWORD"],
        "CREDENTIALS_DIRECTORY": str(cred.parent),
        "OPSAGENT_MCP_BROKER_PASSWORD": web_password,
    }
    nobody = 65534
    env = _as_nobody(nobody)
    if env is None:
        pytest.skip("no Python interpreter that the user nobody may run has this checkout's "
                    "packages")
    python = env.pop("OPSAGENT_TEST_PYTHON")
    config = mcp_config(world, password=False)  # the password comes from the environment
    server = HttpServer(config, {**env, **planted}, user=nobody, python=python)
    try:
        async def scenario() -> Any:
            async with Client(server.url) as client:
                return await client.call_tool("test_env", {})

        # The host, which holds the credential, uses it for the MCP server's caller.
        result = run(scenario())
        assert not result.is_error, result.structured_content
        assert result.structured_content["cred_sha256"]
        assert SECRET not in json.dumps(result.structured_content)

        pid = server.proc.pid
        uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
        assert uids == [str(nobody)] * 4
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        names = {item.split(b"=", 1)[0].decode() for item in environ.split(b"\0") if item}
        assert not names & set(planted), names
        for value in (SECRET, broker["ACTIVEMQ_PASSWORD"], web_password, str(cred)):
            assert value.encode() not in environ
        opened = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert not [link for link in opened if str(cred.parent) in link], opened
        # No file open but its standard streams: /dev/null and the log the test reads.
        files = {link for link in opened if link.startswith("/")}
        assert files <= {"/dev/null", str(server.stderr)}, opened
        # Every connection it holds is to the broker, or a client of its own endpoint.
        peers = _socket_peers(pid)
        established = [p for p in peers if p[4] == "01"]
        assert any(p[3] == int(broker["ACTIVEMQ_PORT"]) for p in established), peers
        assert all(p[3] == int(broker["ACTIVEMQ_PORT"]) or p[1] == server.port
                   for p in established), peers
        assert all(p[1] == server.port for p in peers if p[4] == "0A"), peers
        # And its user cannot read the credential at all.
        probe = subprocess.run([python, "-c", f"open({str(cred)!r}).read()"],
                               user=nobody, group=nobody, extra_groups=[], cwd="/",
                               capture_output=True, text=True)
        assert probe.returncode != 0 and "PermissionError" in probe.stderr
    finally:
        server.stop()
    assert SECRET not in server.log() and web_password not in server.log()


def test_the_documented_configuration_offers_the_bundled_capabilities(broker):
    """contrib/mcp-dev.toml (docs/mcp.md) beside `make run`, and the page's client snippets."""
    page = (ROOT / "docs" / "mcp.md").read_text()
    snippets = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", page, re.S)]
    assert [list(s["mcpServers"]) for s in snippets] == [["opsagent"], ["opsagent"]]
    assert snippets[0]["mcpServers"]["opsagent"]["args"][-1] == "mcp"
    config = (ROOT / "contrib" / "mcp-dev.toml").read_text()
    shown = re.search(r"```toml\n(.*?)```", page, re.S).group(1)
    shown_lines = {line.split("#")[0].strip() for line in shown.splitlines()}
    lines = [line for line in config.splitlines() if line and not line.startswith("#")]
    assert [line for line in lines if line not in shown_lines] == []
    here = f"{broker['ACTIVEMQ_HOST']}:{broker['ACTIVEMQ_PORT']}"
    path = Path(tempfile.mkdtemp()) / "mcp-dev.toml"
    path.write_text(config.replace("127.0.0.1:61613", here))

    async def scenario() -> list[str]:
        params = StdioServerParameters(command=sys.executable, env={"PATH": os.environ["PATH"]},
                                       args=["-m", "opsagent.cli.main", "--config", str(path),
                                             "mcp"])
        async with Client(params) as client:
            return [t.name for t in (await client.list_tools()).tools]

    assert run(scenario()) == ["fetch_payload_log", "rucio_snapshot_update", "submit_task",
                               "opsagent_request_status"]
