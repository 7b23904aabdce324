"""Run the ``console`` examples of a documentation page the way a reader types them.

A page's examples are its fenced ``console`` blocks, in order.  In a block, a line
starting with ``$ `` is a command; the lines after it, up to the next command, are the
output the reader is shown.  Each shown line must appear in the real output, in order
(other lines may come between; runs of blanks compare equal); ``…`` in a shown line
stands for any text, and a line that is only ``…`` for anything.  A command must exit 0,
unless it ends with a comment ``# exits N``.

An HTML comment right before a block changes how it runs:

- ``<!-- run: background -->``: its one command is a long-running process (``make run``).
  It is started, its shown lines are waited for, and it is left running for the rest of
  the page; the next background block, and the end of the page, stop it as Ctrl-C does
  (SIGINT to its process group), and it must then exit within 30 s.
- ``<!-- run: never, REASON -->``: shown, not run; the tests keep a list of these.

Commands run in ``bash -c``, one at a time, from the checkout's root.  ``cd DIR`` and
``source DIR/bin/activate`` are the two that change what follows, and are applied here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import attrs

ELLIPSIS = "…"
_BLOCK = re.compile(
    r"(?:<!--\s*run:\s*(?P<how>[^>]*?)\s*-->\s*\n)?```console\n(?P<body>.*?)```", re.S
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXITS = re.compile(r"\s+#\s*exits\s+(\d+)\s*$")


@attrs.frozen
class Command:
    line: str
    shown: tuple[str, ...]
    exits: int = 0


@attrs.frozen
class Block:
    commands: tuple[Command, ...]
    how: str = ""  # "", "background" or "never, <reason>"


def blocks(page: Path) -> list[Block]:
    out = []
    for match in _BLOCK.finditer(page.read_text()):
        commands: list[Command] = []
        for raw in match.group("body").splitlines():
            if raw.startswith("$ "):
                line = raw[2:]
                exits = _EXITS.search(line)
                if exits:
                    line = line[: exits.start()]
                commands.append(Command(line.strip(), (), int(exits.group(1)) if exits else 0))
            elif commands:
                last = commands[-1]
                commands[-1] = attrs.evolve(last, shown=(*last.shown, raw))
        out.append(Block(tuple(commands), (match.group("how") or "").strip()))
    return out


def _squeeze(line: str) -> str:
    return " ".join(line.split())


def _pattern(shown: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in _squeeze(shown).split(ELLIPSIS)]
    return re.compile(".*".join(parts))


def missing_lines(shown: tuple[str, ...], output: str) -> list[str]:
    """The shown lines that the output does not have, in order; [] when it matches."""
    lines = _ANSI.sub("", output).splitlines()  # colours are not text the reader sees
    at = 0
    for i, expected in enumerate(shown):
        if expected.strip() in ("", ELLIPSIS):
            continue
        pattern = _pattern(expected)
        while at < len(lines) and not pattern.fullmatch(_squeeze(lines[at])):
            at += 1
        if at == len(lines):
            return list(shown[i:])
        at += 1
    return []


class Background:
    """A long-running command whose output is collected as it comes."""

    def __init__(self, line: str, cwd: Path, env: dict[str, str]) -> None:
        self.line = line
        self.proc = subprocess.Popen(
            ["bash", "-c", line],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output = ""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in self.proc.stdout:
            with self._lock:
                self.output += chunk

    def wait_for(self, shown: tuple[str, ...], timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not missing_lines(shown, self.output):
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self._reader.join(1)
        raise AssertionError(
            f"`{self.line}` did not show {missing_lines(shown, self.output)}:\n"
            f"{self.output[-4000:]}"
        )

    def interrupt(self, timeout: float = 30.0) -> str:
        """Ctrl-C: SIGINT to the process group; returns the whole output."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError(
                    f"`{self.line}` ignored Ctrl-C for {timeout} s:\n{self.output[-3000:]}"
                ) from None
        self._reader.join(5)
        return self.output


@attrs.define
class Reader:
    """Types a page's commands: a working directory, an environment, a background job."""

    cwd: Path
    env: dict[str, str]
    timeout: float = 180.0
    background: Background | None = None
    stopped: list[str] = attrs.Factory(list)
    never: list[str] = attrs.Factory(list)

    def run_page(self, page: Path) -> None:
        try:
            for block in blocks(page):
                if block.how.startswith("never"):
                    self.never += [c.line for c in block.commands]
                elif block.how == "background":
                    assert len(block.commands) == 1, "a background block has one command"
                    self.stop_background()
                    command = block.commands[0]
                    self.background = Background(command.line, self.cwd, self.env)
                    self.background.wait_for(command.shown, self.timeout)
                else:
                    assert block.how == "", f"unknown run marker {block.how!r}"
                    for command in block.commands:
                        self.run(command)
        finally:
            self.stop_background()

    def stop_background(self) -> None:
        if self.background is not None:
            self.stopped.append(self.background.interrupt())
            self.background = None

    def run(self, command: Command) -> None:
        line = command.line
        if line.startswith("cd "):
            self.cwd = (self.cwd / line[3:].strip()).resolve()
            assert self.cwd.is_dir(), f"`{line}`: no such directory"
            return
        activate = re.fullmatch(r"(?:source|\.) (\S+)/bin/activate", line)
        if activate:
            venv = (self.cwd / activate.group(1)).resolve()
            assert (venv / "bin" / "activate").is_file(), f"`{line}`: no venv there"
            self.env = {
                **self.env,
                "VIRTUAL_ENV": str(venv),
                "PATH": f"{venv / 'bin'}{os.pathsep}{self.env.get('PATH', '')}",
            }
            return
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        output = done.stdout + done.stderr
        assert done.returncode == command.exits, (
            f"`{line}` exited {done.returncode}, the page says {command.exits}:\n{output[-4000:]}"
        )
        missing = missing_lines(command.shown, output)
        assert not missing, f"`{line}` did not print {missing}; it printed:\n{output[-4000:]}"
