"""Finding capabilities: the pluggy manager, the loading policy and the registry.

Each entry point of the ``opsagent.capabilities`` group is loaded and registered on its
own, and its hooks are called through the plugin manager one plugin at a time
(:func:`call_one`), so that what one plugin raises is charged to it alone.  One that
fails to import or declares something invalid is recorded as broken
(distribution, version, error, traceback) and the host starts with the rest, unless
``strict`` is set.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy

from opsagent import hookspecs
from opsagent.capability import Capability, DeclarationError

GROUP = "opsagent.capabilities"


class PluginError(RuntimeError):
    """Raised in strict mode, and for a required capability that is missing."""


@attrs.frozen
class Broken:
    """A plugin that could not be loaded or whose declaration was refused."""

    name: str
    distribution: str
    version: str
    error: str
    traceback: str = ""


@attrs.define
class Registry:
    """Everything that registered, keyed by msg_type, plus what broke."""

    capabilities: dict[str, Capability] = attrs.Factory(dict)
    broken: list[Broken] = attrs.Factory(list)
    pm: pluggy.PluginManager | None = None

    @property
    def msg_types(self) -> frozenset[str]:
        return frozenset(self.capabilities)

    def get(self, msg_type: str) -> Capability | None:
        return self.capabilities.get(msg_type)

    def plugin_of(self, cap: Capability) -> Any:
        """The plugin (module) that declared ``cap``; None for one registered otherwise."""
        if self.pm is None:
            return None
        for plugin in self.pm.get_plugins():
            if getattr(plugin, "__name__", None) == cap.entry_point:
                return plugin
        return None

    def broken_msg_type(self, msg_type: str) -> Broken | None:
        """A broken plugin that is known to have provided ``msg_type`` (by its name)."""
        for b in self.broken:
            if b.name == msg_type:
                return b
        return None


def manager() -> pluggy.PluginManager:
    """A plugin manager that knows the hook specifications."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def call_one(pm: pluggy.PluginManager, hook: str, plugin: Any, **kwargs: Any) -> list[Any]:
    """Call ``hook`` through ``pm`` on ``plugin``'s implementation only (none: nothing)."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    result: list[Any] = pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)
    return result


def declared_by(module: Any) -> list[Capability]:
    """The capabilities ``module`` registers, as they are (a job process finds its own
    capability so, without loading the other plugins)."""
    pm = manager()
    pm.register(module)
    found: list[Capability] = []
    call_one(pm, "register_capabilities", module, register=found.append)
    return found


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ("?", "?")
    return (dist.metadata["Name"] or "?", dist.version or "?")


def _register_module(
    registry: Registry, pm: pluggy.PluginManager, module: Any, name: str, dist: str, version: str
) -> None:
    offered: list[Capability] = []

    def register(cap: Capability) -> None:
        if not isinstance(cap, Capability):
            raise DeclarationError(f"register() expects a Capability, got {type(cap).__name__}")
        offered.append(
            attrs.evolve(cap, distribution=dist, version=version, entry_point=module.__name__)
        )

    pm.register(module, name=name)
    try:
        call_one(pm, "register_capabilities", module, register=register)
    except BaseException:
        pm.unregister(name=name)
        raise
    for cap in offered:
        other = registry.capabilities.get(cap.msg_type)
        if other is not None:
            pm.unregister(name=name)
            raise DeclarationError(
                f"msg_type {cap.msg_type!r} is claimed by both {other.distribution} "
                f"{other.version} and {dist} {version}"
            )
    for cap in offered:
        registry.capabilities[cap.msg_type] = cap


def _register_program(
    registry: Registry, index: int, table: Any, source: str, strict: bool
) -> None:
    from opsagent.host import programs

    _register_declared(
        registry,
        programs.label(table, index),
        "[[program]]",
        f"[[program]] {index} of {source}",
        lambda: programs.capability_of(table, source),
        source,
        strict,
        describe=lambda exc: f"{type(exc).__name__}: {exc}",
    )


def _register_chain(registry: Registry, table: Any, source: str, strict: bool) -> None:
    from opsagent.host import chains

    _register_declared(
        registry,
        table.msg_type,
        "[[chain]]",
        f"a [[chain]] of {source}",
        lambda: attrs.evolve(chains.from_config(table), version=source),
        source,
        strict,
        describe=str,
    )


def _register_declared(
    registry: Registry,
    name: str,
    kind: str,
    where: str,
    build: Callable[[], Capability],
    source: str,
    strict: bool,
    describe: Callable[[Exception], str],
) -> None:
    """Register a capability the configuration declares (``kind`` ``[[program]]`` or
    ``[[chain]]``): a broken one, or one whose msg_type is taken, is listed as broken
    (strict: raised) and the others load."""
    try:
        cap = build()
        other = registry.capabilities.get(cap.msg_type)
        if other is not None:
            raise DeclarationError(
                f"msg_type {cap.msg_type!r} is claimed by both {other.distribution} "
                f"{other.version} and {where}"
            )
    except Exception as exc:  # noqa: BLE001 - one broken declaration never stops the host
        if strict:
            raise PluginError(f"{kind} {name} ({source}) is broken: {exc}") from exc
        registry.broken.append(Broken(name, kind, source, describe(exc), traceback.format_exc()))
        return
    registry.capabilities[cap.msg_type] = cap


def load(
    *,
    strict: bool = False,
    allow: Iterable[str] = (),
    deny: Iterable[str] = (),
    require: Iterable[str] = (),
    entry_points_: Iterable[EntryPoint] | None = None,
    extra_modules: Iterable[tuple[str, Any]] = (),
    programs: Iterable[Any] = (),
    chains: Iterable[Any] = (),
    source: str = "<config>",
) -> Registry:
    """Load every capability package; see the module docstring for the policy.

    ``allow`` (when not empty) and ``deny`` filter by msg_type after registration; the
    host's control capabilities are never filtered out by ``allow`` but may be denied
    (``shutdown``), except ``health_ping``, which liveness checks, ``opsagent ping`` and
    the hot standby's probes need (limit who may call it with ``allow_users``).
    A ``require``d msg_type that is missing raises :class:`PluginError`.
    ``extra_modules`` are ``(name, module)`` pairs registered like entry points (tests).
    ``programs`` are the configuration's ``[[program]]`` tables (from ``source``), each
    compiled to a capability or recorded as broken like a plugin; so are ``chains``, its
    ``[[chain]]`` tables (after the programs: a chain's steps may be programs).
    """
    pm = manager()
    registry = Registry(pm=pm)
    eps = list(entry_points(group=GROUP) if entry_points_ is None else entry_points_)
    # Built-ins first so that a plugin claiming health_ping is the one reported.
    eps.sort(key=lambda ep: (ep.value != "opsagent.builtin", ep.name))
    for ep in eps:
        dist, version = _dist_of(ep)
        try:
            module = ep.load()
            _register_module(registry, pm, module, ep.name, dist, version)
        except Exception as exc:  # noqa: BLE001 - one broken plugin never stops the host
            broken = Broken(
                ep.name, dist, version, f"{type(exc).__name__}: {exc}", traceback.format_exc()
            )
            if strict:
                raise PluginError(
                    f"plugin {ep.name!r} ({dist} {version}) failed: {broken.error}"
                ) from exc
            registry.broken.append(broken)
    for name, module in extra_modules:
        try:
            _register_module(registry, pm, module, name, name, "0")
        except Exception as exc:  # noqa: BLE001
            if strict:
                raise PluginError(f"plugin {name!r} failed: {exc}") from exc
            registry.broken.append(
                Broken(name, name, "0", f"{type(exc).__name__}: {exc}", traceback.format_exc())
            )
    for index, table in enumerate(programs):
        _register_program(registry, index, table, source, strict)
    for chain in chains:
        _register_chain(registry, chain, source, strict)
    allow_set, deny_set = set(allow), set(deny)
    if "health_ping" in deny_set:
        raise PluginError(
            "capabilities.deny: health_ping cannot be denied (liveness, opsagent ping and "
            "the hot standby's probes need it); limit it with "
            "[capability.health_ping] allow_users = [...]"
        )
    for msg_type in list(registry.capabilities):
        cap = registry.capabilities[msg_type]
        if cap.control and msg_type not in deny_set:
            continue
        if (allow_set and msg_type not in allow_set) or msg_type in deny_set:
            del registry.capabilities[msg_type]
    missing = sorted(set(require) - set(registry.capabilities))
    if missing:
        detail = "; ".join(
            f"{b.name} ({b.distribution} {b.version}): {b.error}" for b in registry.broken
        )
        raise PluginError(
            f"required capabilit{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
            f"not available" + (f"; broken plugins: {detail}" if detail else "")
        )
    return registry
