"""Which hosts a command works on: the runbook's `hosts:` (with `groups:`), `--inventory` files, `--limit`.

The CLI sets `SELECTION` around one command (as `ALLOW_INCLUDE_OUTSIDE`), so every way a runbook is
loaded (run, plan, resume, rollback, validate) sees the same inventories and the same limit.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from opskit.errors import RunbookInvalid, SourceLocation
from opskit.fleet import inventory, limit
from opskit.runbook.model import HostRef
from opskit.runbook.yamlnodes import Y


@dataclass(frozen=True)
class Selection:
    """`--inventory FILE` (repeatable) and `--limit PATTERN` of one command."""

    inventories: tuple[Path, ...] = ()
    limit: str | None = None


SELECTION: ContextVar[Selection] = ContextVar(
    "fleet_selection",
    default=Selection(),  # noqa: B039 - frozen: never mutated
)


class _Problems(Protocol):
    def bad(self, where: SourceLocation, problem: str) -> None: ...


def apply(
    st: _Problems, hosts_y: Y | None, hosts: dict[str, HostRef]
) -> tuple[dict[str, HostRef], dict[str, tuple[str, ...]], str | None]:
    """The runbook's hosts merged with the inventories, its groups, and the limit (checked)."""
    selection = SELECTION.get()
    merged = inventory.Inventory()
    for path in selection.inventories:
        merged.merge(inventory.load_inventory(path))
    # The runbook's own hosts win over an inventory's host of the same name.
    all_hosts = {**merged.hosts, **hosts}
    groups = dict(merged.groups)
    if hosts_y is not None and hosts_y.is_map and "groups" in hosts_y.value:
        try:
            own = inventory.parse_groups(hosts_y.value["groups"])
        except RunbookInvalid as exc:
            st.bad(exc.where, exc.problem)
            own = {}
        for name, members in own.items():
            groups[name] = tuple(m2 for m in members for m2 in groups.get(m, (m,)))
            for member in groups[name]:
                if member not in all_hosts:
                    st.bad(hosts_y.value["groups"].value[name].loc,
                           f"group '{name}': unknown host '{member}' (define it under hosts: or in --inventory)")  # fmt: skip
    groups["all"] = tuple(all_hosts)
    if selection.limit is not None:
        limit.select(selection.limit, tuple(all_hosts), groups)  # an unknown name is bad input now
    return all_hosts, groups, selection.limit


def host_vars(ref: HostRef) -> dict[str, Any]:
    """What a step's templates see of one host: its vars plus Ansible's names for where it is."""
    return {**ref.vars, "inventory_hostname": ref.name, "ansible_host": ref.address}
