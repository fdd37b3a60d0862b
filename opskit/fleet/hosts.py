"""A step's hosts across the fleet: group names expanded, `--limit` applied, per-host template values."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
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


class HostVars(Mapping[str, Mapping[str, Any]]):
    """`hostvars`: every host's vars and captures, built only for the hosts a template names
    (a fleet of 500 hosts would otherwise copy 500 entries for each of its commands)."""

    def __init__(self, runbook: Runbook, per_host: Mapping[str, Mapping[str, Any]]) -> None:
        self._runbook, self._per_host = runbook, per_host

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        ref = self._runbook.hosts[name]
        return {
            **ref.vars,
            "inventory_hostname": name,
            "ansible_host": ref.address,
            **self._per_host.get(name, {}),
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self._runbook.hosts)

    def __len__(self) -> int:
        return len(self._runbook.hosts)


def host_context(
    runbook: Runbook, host: str | None, per_host: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The values a step's templates see on `host`: its vars, and every host's vars and captures as hostvars."""
    hostvars = HostVars(runbook, per_host)
    if (
        host == EVERY_HOST
    ):  # the command as shown once for all hosts: each per-host value by its name
        own: Mapping[str, Any] = {name: f"<{name}>" for name in fleet_names(runbook) - {"hostvars"}}
    else:
        own = hostvars[host] if host is not None and host in runbook.hosts else {}
    return {**own, "hostvars": hostvars}
