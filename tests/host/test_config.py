"""Configuration: defaults stand in for the old agent; errors name the file and the key."""

from __future__ import annotations

import attrs
import pytest
from opsagent.host import config


def test_no_file_uses_the_wire_defaults_and_activemq_variables(monkeypatch):
    monkeypatch.setenv("ACTIVEMQ_HOST", "mq.example")
    monkeypatch.setenv("ACTIVEMQ_PORT", "61612")
    monkeypatch.setenv("ACTIVEMQ_USE_SSL", "true")
    monkeypatch.setenv("ACTIVEMQ_SSL_CA_CERTS", "/etc/ca.pem")
    monkeypatch.delenv("EPICPROD_OPS_QUEUE", raising=False)
    monkeypatch.setenv("SWF_TMP_DIR", "/data/swf-tmp")
    cfg = config.load(None)
    assert cfg.broker.hosts == ["mq.example:61612"]
    assert cfg.broker.use_ssl is True and cfg.broker.ca_certs == "/etc/ca.pem"
    assert cfg.broker.queue == "/queue/epicprod.ops"
    assert cfg.broker.topic == "/topic/epictopic"
    assert cfg.host.namespace == "prodops"
    assert str(cfg.cache_dir) == "/data/swf-tmp"
    monkeypatch.setenv("EPICPROD_OPS_QUEUE", "/queue/other.ops")
    assert config.load(None).broker.queue == "/queue/other.ops"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[host]\nnamespace = 5\n", "host.namespace"),
        ("[brokr]\nhosts = []\n", "brokr"),
        ('[broker]\nqueue = "epicprod.ops"\n', "must start with /queue/ or /topic/"),
        ("[host\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "opsagent.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


@attrs.frozen
class FetchConfig:
    rucio_url: str = "https://rucio.example"
    xrdcp_timeout: float = 120.0


def test_capability_section_is_structured_into_its_own_class(tmp_path):
    path = tmp_path / "opsagent.toml"
    path.write_text(
        "[capability.fetch]\nxrdcp_timeout = 30.0\ntime_limit = 90\n[capability.other]\nbogus = 1\n"
    )
    cfg = config.load(path)
    assert config.section(cfg, "fetch", FetchConfig) == FetchConfig(xrdcp_timeout=30.0)
    assert config.overrides(cfg, "fetch") == {"time_limit": 90}
    with pytest.raises(
        config.ConfigError, match=r"\[capability.other\] unknown key\(s\) \['bogus'\]"
    ):
        config.section(cfg, "other", FetchConfig)
    path.write_text('[capability.fetch]\nxrdcp_timeout = "soon"\n')
    with pytest.raises(
        config.ConfigError, match="capability.fetch.xrdcp_timeout: expected a number"
    ):
        config.section(config.load(path), "fetch", FetchConfig)
