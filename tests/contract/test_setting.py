"""``from_env``: a config field's default from the old agent's variables; ``origins`` says
where each effective value came from, and the file wins."""

from __future__ import annotations

import attrs
import pytest
from opsagent import from_env
from opsagent.host import config as configuration
from opsagent.schema import structure
from opsagent.setting import origins


@attrs.frozen
class Section:
    url: str = from_env("NEW_URL", "OLD_URL", default="")
    seconds: float = from_env("OLD_SECONDS", default=120.0, parse=float)
    token: str = from_env("OLD_TOKEN", default="", repr=False)
    plain: int = 3


def test_the_first_variable_set_is_the_default_and_the_table_wins(monkeypatch) -> None:
    monkeypatch.setenv("OLD_URL", "https://old.example")
    monkeypatch.setenv("OLD_SECONDS", "240")
    monkeypatch.setenv("OLD_TOKEN", "s3cr3t")
    assert structure({}, Section) == Section("https://old.example", 240.0, "s3cr3t", 3)
    monkeypatch.setenv("NEW_URL", "https://new.example")
    table = {"seconds": 60}
    section = structure(table, Section)
    assert (section.url, section.seconds) == ("https://new.example", 60)
    shown = {o.key: (o.value, o.origin) for o in origins(section, table, "/etc/x.toml")}
    assert shown == {
        "url": ("'https://new.example'", "environment variable NEW_URL"),
        "seconds": ("60.0", "config file /etc/x.toml"),
        "token": ("(hidden)", "environment variable OLD_TOKEN"),
        "plain": ("3", "default"),
    }


def test_an_empty_variable_is_not_set(monkeypatch) -> None:
    monkeypatch.setenv("OLD_URL", "")
    assert structure({}, Section).url == ""


def test_a_declaration_names_one_default() -> None:
    with pytest.raises(ValueError, match="exactly one of default and factory"):
        from_env("X")


def test_the_monitor_is_on_when_the_old_variables_are_set(monkeypatch) -> None:
    for name in ("SWF_MONITOR_URL", "SWF_MONITOR_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)
    assert configuration.MonitorConfig().enabled is False
    monkeypatch.setenv("SWF_MONITOR_HTTP_URL", "http://monitor.example/")
    on = configuration.MonitorConfig()
    assert (on.enabled, on.http_url) == (True, "http://monitor.example")
    assert configuration.MonitorConfig(enabled=False).enabled is False  # the file wins
