"""The action registry: one explicit table of `uses:` names, each imported only when first used.

A feature adds a module under `opskit/actions/` and one line here; the engine is never touched.
"""

from __future__ import annotations

import importlib
from typing import cast

from opskit.actions.base import Action, ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params, ShellCommand

REGISTRY: dict[str, str] = {
    "http.check": "opskit.actions.http_check:HttpCheck",
    "tcp.check": "opskit.actions.tcp_check:TcpCheck",
    "dns.check": "opskit.actions.dns_check:DnsCheck",
    "dns.wait": "opskit.actions.dns_wait:DnsWait",
    "dns.update": "opskit.actions.dns_update:DnsUpdate",
    "proxy.start": "opskit.actions.proxy_start:ProxyStart",
    "proxy.stop": "opskit.actions.proxy_stop:ProxyStop",
    "traffic.drained": "opskit.actions.traffic_drained:TrafficDrained",
}


class UnknownAction(LookupError):
    """A `uses:` name that is not in the registry."""


def names() -> list[str]:
    """Every registered action name, sorted."""
    return sorted(REGISTRY)


def load(name: str) -> type[Action]:
    """The action class registered under `name` (imported on first use)."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise UnknownAction(f"unknown action {name!r} (known: {', '.join(names())})") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return cast(type[Action], getattr(module, class_name))


__all__ = [
    "REGISTRY",
    "Action",
    "ActionContext",
    "ActionKind",
    "ActionResult",
    "BaseAction",
    "ParamError",
    "Params",
    "ShellCommand",
    "UnknownAction",
    "load",
    "names",
]
