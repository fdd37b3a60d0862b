"""The parent's delegation against the zone's own NS set: who only one side lists, and what it serves.

Resolvers learn a zone's servers from the parent's referral first (NS set and glue, often with a two-day TTL)
and may keep asking those even after the zone's own NS set dropped one. A server only one side lists is
named with what it serves; when that is older than what the servers both sides list serve, it is a blocker
with its fix (issue #12, point 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opskit.dns.report import NameserverAnswer
from opskit.dns.servers import Server, ServerChoice


@dataclass(frozen=True)
class Delegation:
    """The delegation as the parent's servers give it: NS names, their TTL, and glue addresses."""

    parent: str
    names: tuple[str, ...]
    ttl: int | None
    glue: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class OneSided:
    """Why one server address is listed by one side only, and what to do when it serves old data."""

    why: str
    fix: str


def _bare(name: str) -> str:
    return name.lower().rstrip(".")


def _names(names: Sequence[str]) -> str:
    return ", ".join(_bare(n) for n in names) or "nothing"


def merge(  # noqa: PLR0917 - the two sides and how to reach them, called once by discover
    child_names: Sequence[str],
    child_ttl: int | None,
    child_addresses: Mapping[str, tuple[Server, ...]],
    parent: Delegation | str,
    parent_only: Mapping[str, tuple[Server, ...]],
    choice: ServerChoice,
) -> tuple[tuple[Server, ...], dict[Server, OneSided], list[str]]:
    """Every address either side lists, which of them only one side lists, and notes on the differences."""
    servers: dict[Server, None] = {}
    one_sided: dict[Server, OneSided] = {}
    notes: list[str] = []
    for name in child_names:
        servers.update(dict.fromkeys(child_addresses.get(name, ())))
    if isinstance(parent, str):
        notes.append(
            f"the parent's delegation was not checked ({parent}): a server only the parent lists "
            "would not be asked; pin the parent's servers with --nameserver NAME=ADDR:PORT"
        )
        return tuple(servers), one_sided, notes
    where = f"the parent's delegation ({_bare(parent.parent) or '.'})"
    if set(parent.names) != set(child_names):
        notes.append(
            f"NS sets differ: {where} lists {_names(parent.names)}; the zone's NS set is "
            f"{_names(child_names)}"
        )
    if parent.ttl is not None and child_ttl is not None and parent.ttl != child_ttl:
        notes.append(
            f"NS TTL differs: {parent.ttl} s at the parent, {child_ttl} s in the zone "
            "(resolvers may keep either set that long)"
        )
    for name, addrs in parent_only.items():
        for server in addrs:
            servers[server] = None
            one_sided[server] = OneSided(
                f"in {where} but not in the zone's NS set",
                f"remove {_bare(name)} from the delegation at the parent's registrar, or make it "
                "serve the current zone (transfer it, or take it out of service)",
            )
    for name in child_names:
        if name not in parent.names:
            for server in child_addresses.get(name, ()):
                one_sided[server] = OneSided(
                    f"in the zone's NS set but not in {where}",
                    f"make {_bare(name)} serve the current zone, and list it at the parent or drop "
                    "it from the zone's NS set",
                )
            continue
        _glue(name, parent, child_addresses, choice, servers, one_sided, notes)
    return tuple(servers), one_sided, notes


def _glue(  # noqa: PLR0917 - one step of merge, filling its three results
    name: str,
    parent: Delegation,
    child_addresses: Mapping[str, tuple[Server, ...]],
    choice: ServerChoice,
    servers: dict[Server, None],
    one_sided: dict[Server, OneSided],
    notes: list[str],
) -> None:
    """Glue addresses the zone does not give its nameserver are asked too, and named."""
    glue = parent.glue.get(name, ())
    if not glue or name in choice.pins:
        return  # a pin names the address to use: its port is not what the glue can say
    published = {s.host for s in child_addresses.get(name, ())}
    if not published:  # the zone gives no address of its own: resolvers use the glue
        servers.update(dict.fromkeys(Server(a, choice.auth_port, name) for a in glue))
        return
    if set(glue) != published:
        notes.append(
            f"glue differs: the parent gives {_bare(name)} {', '.join(glue)}; the zone gives "
            f"{', '.join(sorted(published))}"
        )
    for addr in glue:
        if addr in published:
            continue
        server = Server(addr, choice.auth_port, name)
        servers[server] = None
        one_sided[server] = OneSided(
            f"the parent's glue for {_bare(name)} but not an address the zone gives it",
            f"fix the glue of {_bare(name)} at the parent's registrar "
            f"({', '.join(sorted(published))}), or make {addr} serve the current zone",
        )


def findings(
    one_sided: Mapping[Server, OneSided],
    answers: Sequence[NameserverAnswer],
    name: str,
    rtype: str,
) -> tuple[list[str], list[str]]:
    """Problems (a one-sided server serving older data than the rest) and notes, naming each server."""
    if not one_sided:
        return [], []
    by_text = {str(s): (s, side) for s, side in one_sided.items()}
    reference = {(a.answers, a.ttl) for a in answers if a.server not in by_text and a.error is None}
    problems: list[str] = []
    notes: list[str] = []
    for answer in answers:
        if answer.server not in by_text:
            continue
        server, side = by_text[answer.server]
        who = f"{_bare(server.name)} ({server.host})" if server.name else answer.server
        if answer.error is not None:
            notes.append(f"{who} is {side.why}; it {answer.error}")
            continue
        data = ", ".join(answer.answers) or (answer.chain[-1].rcode if answer.chain else "nothing")
        line = f"{who} is {side.why}; it serves {_bare(name)} {rtype} {data} with TTL {answer.ttl}"
        if reference and (answer.answers, answer.ttl) not in reference:
            problems.append(
                f"{line}, unlike the other servers: resolvers can still reach it and get that "
                f"answer; {side.fix}"
            )
        else:
            notes.append(line)
    return problems, notes
