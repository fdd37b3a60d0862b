"""A step's hosts across the fleet: group names expanded, `--limit` applied, per-host template values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opskit.fleet import limit
from opskit.runbook.model import Runbook

EVERY_HOST = "*"  # host_context() for the display of a step that runs on many hosts
FLEET_NAMES = frozenset({"inventory_hostname", "hostvars", "ansible_host"})


def expand(names: Iterable[str], runbook: Runbook) -> tuple[str, ...]:
    """Host names with each group replaced by its members (in order, once), then `--limit` applied."""
    out: list[str] = []
    for name in names:
        out += runbook.groups.get(name, (name,)) if name not in runbook.hosts else (name,)
    hosts = tuple(dict.fromkeys(out))
    if runbook.limit is None:
        return hosts
    local = tuple(h for h in hosts if h in ("local", "localhost"))
    allowed = set(limit.select(runbook.limit, tuple(runbook.hosts), runbook.groups))
    return local + tuple(h for h in hosts if h in allowed)


def fleet_names(runbook: Runbook) -> set[str]:
    """Names a template may use because of the fleet: every host var, inventory_hostname, hostvars."""
    return set(FLEET_NAMES) | {k for h in runbook.hosts.values() for k in h.vars}


def host_context(
    runbook: Runbook, host: str | None, per_host: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The values a step's templates see on `host`: its vars, and every host's vars and captures as hostvars."""
    hostvars = {
        name: {
            **ref.vars,
            "inventory_hostname": name,
            "ansible_host": ref.address,
            **per_host.get(name, {}),
        }
        for name, ref in runbook.hosts.items()
    }
    if (
        host == EVERY_HOST
    ):  # the command as shown once for all hosts: each per-host value by its name
        own = {name: f"<{name}>" for name in fleet_names(runbook) - {"hostvars"}}
    else:
        own = hostvars.get(host or "", {})
    return {**own, "hostvars": hostvars}
