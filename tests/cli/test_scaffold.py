"""``opsagent new``: the template from the command line, with errors a person can act on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from opsagent.cli.main import main


@pytest.fixture(autouse=True)
def cookiecutter_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep cookiecutter's replay files out of $HOME."""
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(f"replay_dir: {tmp_path / 'replay'}\n")
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(config))


def test_new_generates_a_distribution_and_says_what_to_do_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["new", "--no-input", "-o", str(out), "msg_type=hello_there"]) == 0
    made = out / "opsagent-hello-there"
    assert capsys.readouterr().out == (
        f"created {made}\nnext:\ncd {made}\npip install -e '.[test]'\npytest\nopsagent plugins\n"
    )
    init = (made / "src" / "opsagent_hello_there" / "__init__.py").read_text()
    assert 'msg_type="hello_there"' in init
    # The name defaults from the msg_type, not from the template's example.
    assert "The `hello_there` capability for the opsagent host: Hello there." in (
        (made / "README.md").read_text()
    )
    assert '"opsagent>=0.1"' in (made / "pyproject.toml").read_text()


def test_new_refuses_to_overwrite_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["new", "--no-input", "-o", str(tmp_path), "msg_type=hello_there"]
    assert main(args) == 0
    readme = tmp_path / "opsagent-hello-there" / "README.md"
    readme.write_text("edited")
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert readme.read_text() == "edited"
    assert main([*args, "--force"]) == 0
    assert readme.read_text() != "edited"


def test_new_names_the_questions_when_given_an_unknown_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", "--no-input", "-o", str(tmp_path), "msgtype=x"]) == 1
    err = capsys.readouterr().err
    assert "the template asks no 'msgtype'" in err and "msg_type, description" in err
    assert main(["new", "--no-input", "-o", str(tmp_path), "msg_type"]) == 1
    assert "expected key=value, got 'msg_type'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "cookiecutter.yaml"]


def test_new_passes_on_the_templates_refusal_and_writes_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["new", "--no-input", "-o", str(out), "msg_type=shutdown"]) == 1
    err = capfd.readouterr().err
    assert "msg_type: 'shutdown' is reserved for the host" in err
    assert "the template refused the answers above; nothing was written" in err
    assert "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_without_cookiecutter_new_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "cookiecutter.main", None)
    assert main(["new", "--no-input", "-o", str(tmp_path), "msg_type=x_y"]) == 1
    assert "pip install 'opsagent[dev]'" in capsys.readouterr().err
