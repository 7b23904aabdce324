"""The capability declaration and plugin discovery refuse what they must, naming the culprit."""

from __future__ import annotations

import re
import types

import attrs
import pytest
from opsagent import Capability, Outcome, hookimpl
from opsagent.capability import DeclarationError
from opsagent.host import plugins


@attrs.frozen
class In:
    x: str = ""


def doer(inp: In, job) -> Outcome:
    return Outcome.ok()


def cap(**kw):
    base = dict(msg_type="thing", input=In, doer=doer, events={"ok": "thing_done",
                                                               "error": "thing_failed"})
    return Capability(**{**base, **kw})


@pytest.mark.parametrize("kw, message", [
    ({"msg_type": "Bad-Type"}, "msg_type: expected lower_snake_case"),
    ({"input": dict}, "input: expected an attrs class"),
    ({"events": {"ok": "x_done"}}, "no event declared for outcome 'error'"),
    ({"events": {"ok": "a", "error": "b", "maybe": "c"}}, "unknown outcome(s) ['maybe']"),
    ({"time_limit": 0}, "time_limit: expected a positive number"),
    ({"credentials": ("x509 proxy",)}, "'x509 proxy' is not a valid credential name"),
    ({"isolation": "fork"}, "isolation"),
    ({"concurrency": 0}, "concurrency: expected a positive number"),
    ({"reconcile": "yes"}, "reconcile: expected a function or None, got 'yes'"),
    ({"dedup_space": "Submit:"}, "dedup_space"),
    ({"action": "task submit"}, "action"),
])
def test_bad_declarations_are_refused(kw, message):
    with pytest.raises((DeclarationError, ValueError)) as info:
        cap(**kw)
    assert message in str(info.value)


def test_timeout_falls_back_to_the_error_event():
    c = cap()
    assert c.event_for("timeout") == "thing_failed"
    assert c.event_for("ok") == "thing_done"


def test_undeclared_successes_take_the_ok_event_and_failures_the_error_event():
    c = cap()
    assert [c.event_for(s) for s in ("skipped", "warning")] == ["thing_done"] * 2
    assert [c.event_for(s) for s in ("unrecorded", "unverified")] == ["thing_failed"] * 2
    assert cap(events={"ok": "a", "error": "b", "skipped": "c"}).event_for("skipped") == "c"


def test_dedup_keys_are_namespaced_by_msg_type_unless_a_space_is_shared():
    one = cap(msg_type="submit_task", dedup_key=lambda inp: inp.x)
    other = cap(msg_type="submit_evgen_task", dedup_key=lambda inp: inp.x)
    assert one.key_of(In("t1")) != other.key_of(In("t1"))
    shared = [c.key_of(In("t1")) for c in (attrs.evolve(one, dedup_space="submit"),
                                           attrs.evolve(other, dedup_space="submit"))]
    assert shared == ["submit:t1", "submit:t1"]


def _module(name, *caps, raises=None):
    mod = types.ModuleType(name)

    @hookimpl
    def register_capabilities(register):
        if raises:
            raise raises
        for c in caps:
            register(c)

    mod.register_capabilities = register_capabilities
    return mod


def test_two_plugins_claiming_one_msg_type_conflict_names_both():
    a = _module("plug_a", cap())
    b = _module("plug_b", cap())
    reg = plugins.load(entry_points_=[], extra_modules=[("plug_a", a), ("plug_b", b)])
    assert list(reg.capabilities) == ["thing"]
    assert reg.capabilities["thing"].distribution == "plug_a"
    assert len(reg.broken) == 1
    assert "claimed by both plug_a 0 and plug_b 0" in reg.broken[0].error


def test_a_plugin_that_raises_is_recorded_and_the_rest_load():
    good = _module("good", cap())
    bad = _module("bad", raises=RuntimeError("no rucio"))
    reg = plugins.load(entry_points_=[], extra_modules=[("bad", bad), ("good", good)])
    assert "thing" in reg.capabilities
    assert [(b.name, b.error) for b in reg.broken] == [("bad", "RuntimeError: no rucio")]
    assert "Traceback" in reg.broken[0].traceback


def test_strict_makes_a_broken_plugin_fatal():
    bad = _module("bad", raises=RuntimeError("no rucio"))
    with pytest.raises(plugins.PluginError, match="plugin 'bad'.*no rucio"):
        plugins.load(entry_points_=[], extra_modules=[("bad", bad)], strict=True)


def test_allow_deny_and_require():
    mod = _module("m", cap(), cap(msg_type="other"))
    reg = plugins.load(entry_points_=[], extra_modules=[("m", mod)], allow=["thing"])
    assert set(reg.capabilities) == {"thing"}
    reg = plugins.load(entry_points_=[], extra_modules=[("m", mod)], deny=["thing"])
    assert set(reg.capabilities) == {"other"}
    with pytest.raises(plugins.PluginError, match="required capability missing_one"):
        plugins.load(entry_points_=[], extra_modules=[("m", mod)], require=["missing_one"])


def test_control_types_are_reserved_for_the_host():
    with pytest.raises(DeclarationError, match="reserved for the host"):
        cap(msg_type="health_ping", distribution="somebody-else")


def test_every_hook_is_documented_and_exercised():
    from opsagent import hookspecs

    specs = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "opsagent_spec")]
    # register_capabilities: every test that loads a plugin; capability_checks:
    # tests/cli/test_selftest.py (tests/siteops implements it).
    assert specs == ["capability_checks", "register_capabilities"]
    for name in specs:
        assert getattr(hookspecs, name).__doc__


def test_optional_credentials_must_be_declared_credentials():
    assert cap(credentials=("a", "b"), optional_credentials=("b",)).optional_credentials == ("b",)
    with pytest.raises(DeclarationError, match=r"optional_credentials: \['c'\] not among"):
        cap(credentials=("a",), optional_credentials=("c",))


def test_a_chain_is_a_capability_whose_steps_are_checked_at_declaration():
    from opsagent import Chain, Step

    events = {"ok": "c_done", "error": "c_failed"}
    chain = Chain(msg_type="c", steps=[Step("a"), Step("b", name="b_csv", input={"s": "csv"})],
                  events=events)
    assert [s.label for s in chain.steps] == ["a", "b_csv"]
    assert chain.isolation == "thread" and chain.key_of(None) == "c:chain"
    with pytest.raises(DeclarationError, match="at least one step"):
        Chain(msg_type="c", steps=[], events=events)
    with pytest.raises(DeclarationError, match="names used twice"):
        Chain(msg_type="c", steps=[Step("a"), Step("a")], events=events)
    with pytest.raises(DeclarationError, match="cannot be a step of itself"):
        Chain(msg_type="c", steps=[Step("c")], events=events)
    with pytest.raises(DeclarationError, match="is not a msg_type"):
        Step("Not-one")


def test_the_action_record_names_who_asked_from_the_input_unless_declared():
    import attrs
    from opsagent import Capability

    @attrs.frozen
    class Inp:
        task_name: str = "t1"
        owner: str | None = None
        created_by: str | None = "cron"

    cap = Capability(msg_type="x", input=Inp, doer=lambda i, j: None,
                     events={"ok": "x_done", "error": "x_failed"}, action="x_act",
                     subject_type="campaign_task", subject_key=lambda i: i.task_name)
    assert cap.username_of(Inp()) == "cron"
    assert cap.username_of(Inp(owner="alice")) == "alice"
    assert (cap.action_id, cap.subject_of(Inp())) == ("x_act", "t1")
    named = attrs.evolve(cap, username=lambda i: "someone", action="")
    assert (named.username_of(Inp()), named.action_id) == ("someone", "x")
    with pytest.raises(ValueError):
        attrs.evolve(cap, sublevel="urgent")


def test_the_config_validators_name_the_field_and_what_they_expect():
    import math

    from opsagent import FieldError, between, http_url, positive

    @attrs.frozen
    class Settings:
        timeout: float = attrs.field(default=1.0, validator=positive)
        parallel: int = attrs.field(default=4, validator=between(1, 256, "requests in flight"))
        url: str = attrs.field(default="", validator=http_url)

    assert Settings(timeout=0.5, parallel=256, url="https://mon.example/prod")
    for kw, field, words in (
        ({"timeout": 0}, "timeout", "expected a positive number, got 0"),
        ({"timeout": math.nan}, "timeout", "expected a positive number, got nan"),
        ({"timeout": "1"}, "timeout", "expected a positive number, got '1'"),
        ({"parallel": 0}, "parallel", "expected 1 to 256 requests in flight, got 0"),
        ({"parallel": 257}, "parallel", "expected 1 to 256 requests in flight, got 257"),
        ({"url": "ftp://mon.example"}, "url", "expected an http(s) base URL"),
        ({"url": "https://mon.example/?next=evil"}, "url", "expected an http(s) base URL"),
        ({"url": "https:///no-host"}, "url", "expected an http(s) base URL"),
    ):
        with pytest.raises(FieldError, match=re.escape(words)) as caught:
            Settings(**kw)
        assert caught.value.field == field
