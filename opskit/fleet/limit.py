"""`--limit PATTERN` as Ansible reads it: hosts, groups, globs, `!exclusions`, `&intersections`.

Terms are separated by `,` or `:` (`web:!web3`, `web,db`); the plain terms are unioned, then each `&term`
intersects and each `!term` removes. A term is a host, a group (its hosts) or an fnmatch glob over both.
The order of the hosts is the order they were defined in, never the order of the pattern.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence

from opskit.errors import UsageError

_SPLIT = re.compile(r"[,:]")


def hosts_of(term: str, hosts: Sequence[str], groups: Mapping[str, Sequence[str]]) -> set[str]:
    """The hosts one term names: a group, a host, or a glob over host and group names."""
    if term in groups:
        return set(groups[term])
    if term in hosts:
        return {term}
    if any(c in term for c in "*?["):
        found = {h for h in hosts if fnmatch.fnmatchcase(h, term)}
        for name, members in groups.items():
            if fnmatch.fnmatchcase(name, term):
                found |= set(members)
        return found
    return set()


def select(
    pattern: str, hosts: Sequence[str], groups: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    """The hosts `pattern` selects, in definition order; an unknown plain name is bad input."""
    terms = [t.strip() for t in _SPLIT.split(pattern) if t.strip()]
    if not terms:
        raise UsageError(f"--limit {pattern!r}: names no host or group")
    chosen: set[str] = set()
    plain = [t for t in terms if t[0] not in "!&"]
    for term in plain:
        found = hosts_of(term, hosts, groups)
        if not found and not any(c in term for c in "*?["):
            known = ", ".join([*groups, *hosts][:20])
            raise UsageError(
                f"--limit {pattern!r}: no host or group named {term!r} (known: {known})"
            )
        chosen |= found
    if not plain:
        chosen = set(hosts)  # `--limit '!db'`: everything but db
    for term in terms:
        if term[0] == "&":
            chosen &= hosts_of(term[1:], hosts, groups)
        elif term[0] == "!":
            chosen -= hosts_of(term[1:], hosts, groups)
    return tuple(h for h in hosts if h in chosen)
