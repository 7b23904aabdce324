"""The documentation: it builds strictly, its reference pages follow the code, every hook
is documented, and every command of the quick start and the plugin guide runs as shown."""

from __future__ import annotations

import hashlib
import html
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from docs_examples import Reader, blocks, missing_lines
from opsagent import hookspecs
from opsagent.testing.http import FakeServer, Request, Response
from support import ROOT

DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent


def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True)


# -- the site and the reference pages ---------------------------------------------------


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    built = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    pages = ("quickstart", "concepts", "operations", "writing-a-capability", "messages", "wire")
    for page in pages:
        assert (tmp_path / "site" / page / "index.html").is_file(), page


def test_the_generated_reference_pages_are_current() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_message_reference_lists_every_bundled_msg_type_and_its_events() -> None:
    page = (DOCS / "messages.md").read_text()
    for cap in gen_docs().bundled_capabilities():
        section = page.split(f"## `{cap.msg_type}`\n", 1)[1].split("\n## ", 1)[0]
        for event in cap.events.values():
            assert f"`{event}`" in section, (cap.msg_type, event)


def test_the_wire_reference_explains_every_rejection_code_the_host_sends() -> None:
    module = gen_docs()
    sent = module.rejection_codes_sent()
    assert {"forbidden", "request_id_reused", "malformed", "internal"} <= sent
    assert sorted(sent - set(module.REJECTIONS)) == [], "codes sent that docs/wire.md omits"
    assert sorted(set(module.REJECTIONS) - sent) == [], "codes explained that are never sent"
    page = (DOCS / "wire.md").read_text()
    for code in sent:
        assert f"| `{code}` |" in page, code


def test_no_page_or_docstring_sends_the_reader_outside_the_repository() -> None:
    # The wire contract is docs/wire.md; the spec it came from is not shipped.
    tracked = subprocess.run(
        ["git", "grep", "-l", "WIRE.md", "--", ".", ":!tests/system/test_docs.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert tracked.stdout.split() == []


def test_every_configuration_key_is_described() -> None:
    module = gen_docs()
    keys = module.documented_config_keys()
    assert [key for key, described in keys.items() if not described] == []
    assert sorted(set(module.NOTES) - set(keys)) == [], "NOTES for keys that are gone"
    page = (DOCS / "configuration.md").read_text()
    for key in keys:
        assert f"**`{key.split('.', 1)[1]}`**" in page, key


def test_every_hook_is_documented() -> None:
    hooks = [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "opsagent_spec")
    ]
    assert "register_capabilities" in hooks
    page = (DOCS / "hooks.md").read_text()
    sections = dict(re.findall(r"^## `(\w+)`\n(.*?)(?=^## |\Z)", page, re.S | re.M))
    undocumented = [h for h in hooks if len(sections.get(h, "").split()) < 20]
    assert undocumented == [], "hooks without a section in docs/hooks.md"
    assert sorted(set(sections) - set(hooks)) == [], "sections for hooks that do not exist"
    assert [h for h in hooks if not inspect.getdoc(getattr(hookspecs, h))] == []


# -- the examples -------------------------------------------------------------------------


def test_the_example_reader_compares_output_as_documented() -> None:
    shown = ("first …", "…", "third")
    assert missing_lines(shown, "first line\nsecond\nthird\n") == []
    assert missing_lines(shown, "third\nfirst line\n") == ["third"]
    assert missing_lines(("a…z",), "abc") == ["a…z"]


def test_the_only_examples_not_run_are_make_test() -> None:
    # `make test` runs this file; every other command on the two pages is run below.
    never = [
        command.line
        for page in ("quickstart.md", "writing-a-capability.md")
        for block in blocks(DOCS / page)
        if block.how.startswith("never")
        for command in block.commands
    ]
    assert never == ["make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _clean(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def reader_env(tmp_path: Path) -> dict[str, str]:
    """The test's environment as a fresh shell has it: no venv active, no host config."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPSAGENT_CONFIG", "VIRTUAL_ENV")}
    # cookiecutter's replay files go to the test's directory, not $HOME.
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(f"replay_dir: {tmp_path / 'replay'}\n")
    env["COOKIECUTTER_CONFIG"] = str(config)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(BIN))
    return env


@pytest.mark.broker
def test_the_quick_start_runs_as_shown(broker: dict[str, str], reader_env: dict[str, str]) -> None:
    made = [ROOT / "build" / "quickstart", ROOT / ".cache" / "hello"]
    _clean(*made)
    # A queue of its own, so that no other host on this broker takes its requests.
    env = {**reader_env, "EPICPROD_OPS_QUEUE": f"/queue/docs.{uuid.uuid4().hex[:12]}"}
    reader = Reader(ROOT, env)
    try:
        reader.run_page(DOCS / "quickstart.md")
    finally:
        pip("uninstall", "-y", "-q", "opsagent-hello")
        _clean(*made)
    assert len(reader.stopped) == 2
    for output in reader.stopped:  # what Ctrl-C does, as the page says
        assert "stopped with exit status 0" in output, output[-2000:]


def _normal(name: str) -> str:
    """A project name as the simple API compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


class FakeIndex:
    """A package index on loopback: twine's upload API and pip's simple API."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.files: dict[str, bytes] = {}
        server.route("POST", "/legacy/", self._upload)
        server.route("GET", "/simple/<project>/", self._project)
        server.route("GET", "/files/<name>", self._file)

    def _upload(self, req: Request) -> Response:
        if not (req.header("Authorization") or "").startswith("Basic "):
            return Response.text("no credentials", status=403)
        fields = req.files()
        if fields[":action"][1] != b"file_upload":
            return Response.text("unknown action", status=400)
        name, content = fields["content"]
        assert name is not None
        if name in self.files:
            return Response.text(f"{name} already exists", status=400)
        self.files[name] = content
        return Response.text("OK")

    def _project(self, req: Request) -> Response:
        project = _normal(req.params["project"])
        links = [
            f'<a href="/files/{html.escape(n)}#sha256={hashlib.sha256(c).hexdigest()}">'
            f"{html.escape(n)}</a>"
            for n, c in sorted(self.files.items())
            if _normal(n.split("-")[0]) == project
        ]
        if not links:
            return Response.text("not found", status=404)
        return Response.text(
            "<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>",
            content_type="text/html",
        )

    def _file(self, req: Request) -> Response:
        content = self.files.get(req.params["name"])
        if content is None:
            return Response.text("not found", status=404)
        return Response(200, content, {"Content-Type": "application/octet-stream"})


@pytest.fixture
def index() -> Iterator[FakeIndex]:
    with FakeServer() as server:
        yield FakeIndex(server)


def test_the_plugin_guide_runs_as_shown(index: FakeIndex, reader_env: dict[str, str]) -> None:
    made = ROOT / "build" / "guide"
    _clean(made)
    env = {
        **reader_env,
        "UPLOAD_URL": f"{index.server.url}/legacy/",
        "INDEX_URL": f"{index.server.url}/simple/",
        "TWINE_USERNAME": "__token__",
        "TWINE_PASSWORD": "not-a-real-token",
        "TWINE_NON_INTERACTIVE": "1",
    }
    try:
        Reader(ROOT, env).run_page(DOCS / "writing-a-capability.md")
    finally:
        pip("uninstall", "-y", "-q", "opsagent-campaign-sweep")
        _clean(made)
    assert sorted(index.files) == [
        "opsagent_campaign_sweep-0.1.0-py3-none-any.whl",
        "opsagent_campaign_sweep-0.1.0.tar.gz",
    ]
