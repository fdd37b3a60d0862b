"""Hosts and groups from an inventory file: opskit's own YAML, Ansible's INI and Ansible's YAML.

An Ansible user's hosts already live in an inventory; `--inventory FILE` reads it as Ansible would
(`ansible_host`, `ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`, group `vars` and
`children`). Every other variable of a host (its own, then its groups', closest group winning) reaches
the templates of a step that runs on it. A problem is reported as FILE:LINE: what was expected.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit.errors import RunbookInvalid, SourceLocation, UsageError
from opskit.runbook.model import HostRef
from opskit.runbook.yamlnodes import Y, read

# Ansible's connection variables, mapped onto a runbook host's fields.
CONNECTION_VARS = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "key_file",
    "ansible_private_key_file": "key_file",
    "opskit_known_hosts": "known_hosts",  # opskit's own: the file that pins this host's key
}
_RANGE = re.compile(r"\[(\d+):(\d+)\]")
_MAX_RANGE = 10_000  # web[1:10000] is a fleet; more is a typo


@dataclass
class Inventory:
    """Hosts in file order and groups (name -> member host names, children already flattened)."""

    hosts: dict[str, HostRef] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def merge(self, other: Inventory) -> None:
        """Add another inventory: a later host definition wins, group members add up."""
        self.hosts.update(other.hosts)
        for name, members in other.groups.items():
            self.groups[name] = _unique((*self.groups.get(name, ()), *members))


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def load_inventory(path: Path) -> Inventory:
    """Read one inventory file, whatever its format (raises UsageError/RunbookInvalid in one line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--inventory {path}: cannot read it: {exc}") from None
    if path.suffix not in (".yml", ".yaml") and not _looks_yaml(text):
        return parse_ini(text, str(path))
    problems: list[RunbookInvalid] = []
    root, _ = read(path, str(path), problems)
    if problems:
        raise problems[0]
    if root is None or not root.is_map:
        raise UsageError(f"--inventory {path}: expected a YAML mapping or an Ansible INI file")
    keys = set(root.value)
    if "hosts" in keys and keys <= {"hosts", "groups", "vars"}:
        return parse_opskit(root)
    return parse_ansible_yaml(root)


def _looks_yaml(text: str) -> bool:
    """YAML's first line is `---`, `key:` or `key: value`; an INI file starts with `[group]` or a host."""
    lines = (ln.strip() for ln in text.splitlines())
    first = next((ln for ln in lines if ln and not ln.startswith(("#", ";"))), "")
    return first == "---" or first.endswith(":") or ": " in first


# -- Ansible INI ------------------------------------------------------------------------------------


def parse_ini(text: str, display: str) -> Inventory:
    """Ansible's INI inventory: `[group]`, `[group:vars]`, `[group:children]`, `key=value` host vars."""
    host_vars: dict[str, dict[str, Any]] = {}
    host_locs: dict[str, SourceLocation] = {}
    direct: dict[str, list[str]] = {"all": [], "ungrouped": []}
    children: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = SourceLocation(display, number, 1)
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise RunbookInvalid(
                    where, f"expected [group], [group:vars] or [group:children], got {line!r}"
                )
            section, _, kind = line[1:-1].partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise RunbookInvalid(
                    where, f"unknown section kind ':{kind}' (expected :vars or :children)"
                )
            direct.setdefault(section, [])
            continue
        if kind == "vars":
            key, eq, value = line.partition("=")
            if not eq:
                raise RunbookInvalid(where, f"expected key=value in [{section}:vars], got {line!r}")
            group_vars.setdefault(section, {})[key.strip()] = _scalar(value.strip())
            continue
        if kind == "children":
            children.setdefault(section, []).append(line.split()[0])
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise RunbookInvalid(where, f"cannot split {line!r}: {exc}") from None
        own: dict[str, Any] = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if not eq:
                raise RunbookInvalid(where, f"expected key=value after the host name, got {word!r}")
            own[key] = _scalar(value)
        for name in _expand_range(words[0], where):
            host_vars.setdefault(name, {}).update(own)
            host_locs.setdefault(name, where)
            direct[section].append(name)
    return _build(host_vars, host_locs, direct, children, group_vars)


def _scalar(text: str) -> Any:
    """INI values as Ansible reads them: numbers become numbers, quotes are removed."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.isdigit():
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _expand_range(pattern: str, where: SourceLocation) -> list[str]:
    """`web[01:12]` -> web01 .. web12 (leading zeros kept, as Ansible does)."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    start, end = match.group(1), match.group(2)
    if int(end) < int(start) or int(end) - int(start) >= _MAX_RANGE:
        raise RunbookInvalid(
            where, f"host range [{start}:{end}] must count up, at most {_MAX_RANGE} hosts"
        )
    width = len(start) if start.startswith("0") else 0
    names = []
    for n in range(int(start), int(end) + 1):
        names += _expand_range(
            pattern[: match.start()] + str(n).zfill(width) + pattern[match.end() :], where
        )
    return names


# -- Ansible YAML -----------------------------------------------------------------------------------


def parse_ansible_yaml(root: Y) -> Inventory:
    """Ansible's YAML inventory: group -> {hosts: {name: vars}, vars: {...}, children: {group: ...}}."""
    host_vars: dict[str, dict[str, Any]] = {}
    host_locs: dict[str, SourceLocation] = {}
    direct: dict[str, list[str]] = {"all": [], "ungrouped": []}
    children: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}

    def group(name: str, y: Y) -> None:
        direct.setdefault(name, [])
        if y.value is None:
            return
        if not y.is_map:
            raise RunbookInvalid(
                y.loc, f"group '{name}' must be a mapping of hosts, vars, children"
            )
        for key, value in y.value.items():
            if key not in ("hosts", "vars", "children"):
                raise RunbookInvalid(
                    value.key_loc or value.loc,
                    f"unknown key '{key}' in group '{name}' (allowed: hosts, vars, children)",
                )
            if value.value is None:
                continue
            if not value.is_map:
                raise RunbookInvalid(value.loc, f"{name}.{key} must be a mapping")
        f = y.value
        for host, hy in (f["hosts"].value or {}).items() if "hosts" in f else ():
            own = hy.plain() if hy.is_map else {}
            for expanded in _expand_range(host, hy.key_loc or hy.loc):
                host_vars.setdefault(expanded, {}).update(own)
                host_locs.setdefault(expanded, hy.key_loc or hy.loc)
                direct[name].append(expanded)
        if "vars" in f and f["vars"].is_map:
            group_vars.setdefault(name, {}).update(f["vars"].plain())
        for child, cy in (f["children"].value or {}).items() if "children" in f else ():
            children.setdefault(name, []).append(child)
            group(child, cy)

    for name, y in root.value.items():
        group(name, y)
    return _build(host_vars, host_locs, direct, children, group_vars)


def _build(
    host_vars: dict[str, dict[str, Any]],
    host_locs: Mapping[str, SourceLocation],
    direct: dict[str, list[str]],
    children: Mapping[str, list[str]],
    group_vars: Mapping[str, Mapping[str, Any]],
) -> Inventory:
    """Flatten children into groups, give each host its groups' vars, map connection vars to fields."""
    members: dict[str, tuple[str, ...]] = {}

    def flatten(name: str, seen: tuple[str, ...]) -> tuple[str, ...]:
        if name in seen:
            return ()  # a cycle: Ansible refuses it too, but counting it once is enough here
        found = list(direct.get(name, []))
        for child in children.get(name, []):
            found += flatten(child, (*seen, name))
        return _unique(found)

    for name in [*direct, *children]:
        members[name] = flatten(name, ())
    grouped = {h for name, hs in members.items() if name not in ("all", "ungrouped") for h in hs}
    members["ungrouped"] = _unique(
        [*members.get("ungrouped", ()), *(h for h in host_vars if h not in grouped)]
    )
    members["all"] = tuple(host_vars)
    inventory = Inventory(groups={k: v for k, v in members.items() if v or k == "all"})
    for host, own in host_vars.items():
        merged: dict[str, Any] = dict(group_vars.get("all", {}))
        # parents before children, so the group closest to the host wins, and the host's own vars last
        for name in sorted(
            (g for g, hs in members.items() if host in hs and g != "all"),
            key=lambda g: _depth(g, children),
        ):
            merged.update(group_vars.get(name, {}))
        merged.update(own)
        inventory.hosts[host] = host_ref(host, merged, host_locs.get(host))
    return inventory


def _depth(group: str, children: Mapping[str, list[str]]) -> int:
    parents = [p for p, kids in children.items() if group in kids]
    return (
        1 + max((_depth(p, children) for p in parents if p != group), default=0) if parents else 0
    )


def host_ref(name: str, variables: Mapping[str, Any], loc: SourceLocation | None) -> HostRef:
    """A runbook host from inventory variables; whatever is not a connection variable stays a host var."""
    fields: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in variables.items():
        target = CONNECTION_VARS.get(key)
        if target is None:
            rest[key] = value
        else:
            fields.setdefault(target, value)
    port = fields.get("port", 22)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    return HostRef(
        name=name,
        address=str(fields.get("address", name)),
        port=port,
        user=None if fields.get("user") is None else str(fields["user"]),
        key_file=None if fields.get("key_file") is None else str(fields["key_file"]),
        known_hosts=None if fields.get("known_hosts") is None else str(fields["known_hosts"]),
        loc=loc,
        vars=rest,
    )


# -- opskit's own YAML ------------------------------------------------------------------------------


def parse_opskit(root: Y) -> Inventory:
    """opskit's inventory: the runbook's own `hosts:` shape (with `groups:`) in a file of its own."""
    inventory = Inventory()
    hosts = root.value["hosts"]
    if not hosts.is_map:
        raise RunbookInvalid(hosts.loc, "hosts must be a mapping of host name -> address or fields")
    for name, y in hosts.value.items():
        if name == "groups":
            inventory.groups.update(parse_groups(y))
            continue
        inventory.hosts[name] = opskit_host(name, y)
    if "groups" in root.value:
        inventory.groups.update(parse_groups(root.value["groups"]))
    inventory.groups["all"] = tuple(inventory.hosts)
    return inventory


OPSKIT_HOST_FIELDS = ("address", "port", "user", "key_file", "known_hosts", "vars")


def opskit_host(name: str, y: Y) -> HostRef:
    """One opskit host entry: an address, or a mapping of the runbook's host fields plus `vars:`."""
    if not y.is_map:
        return HostRef(name=name, address=str(y.value), loc=y.loc)
    f = y.value
    for key, value in f.items():
        if key not in OPSKIT_HOST_FIELDS:
            raise RunbookInvalid(
                value.key_loc or value.loc,
                f"unknown field '{key}' in host '{name}' (allowed: {', '.join(OPSKIT_HOST_FIELDS)})",
            )
    if "address" not in f:
        raise RunbookInvalid(y.loc, f"host '{name}' needs an address")
    plain = y.plain()
    variables = plain.pop("vars", None) or {}
    if not isinstance(variables, dict):
        raise RunbookInvalid(f["vars"].loc, f"host '{name}': vars must be a mapping")
    return HostRef(name=name, address=str(plain["address"]), port=plain.get("port", 22), user=plain.get("user"),
                   key_file=plain.get("key_file"), known_hosts=plain.get("known_hosts"),
                   loc=y.key_loc or y.loc, vars=variables)  # fmt: skip


def parse_groups(y: Y) -> dict[str, tuple[str, ...]]:
    """`groups: {web: [web1, web2], all_web: [web, web3]}`; a member may itself be a group."""
    if not y.is_map:
        raise RunbookInvalid(
            y.loc, "groups must be a mapping of group name -> list of hosts or groups"
        )
    raw: dict[str, list[str]] = {}
    for name, members in y.value.items():
        if members.is_list:
            raw[name] = [str(m.value) for m in members.value]
        elif isinstance(members.value, str):
            raw[name] = [members.value]
        else:
            raise RunbookInvalid(
                members.loc, f"group '{name}' must be a list of host or group names"
            )

    def flatten(name: str, seen: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for member in raw[name]:
            if member in raw and member not in seen:
                out += flatten(member, (*seen, name))
            elif member not in raw:
                out.append(member)
        return out

    return {name: _unique(flatten(name, (name,))) for name in raw}
