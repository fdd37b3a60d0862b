"""The other address family: an A switched while the AAAA still points at the old host (issue #12.5).

Happy Eyeballs prefers IPv6, so a forgotten AAAA keeps most dual-stack clients on the old host after
the A moved. Said plainly wherever a switch is made or watched.
"""

from __future__ import annotations

from collections.abc import Sequence

from opskit.dns.servers import Server

OTHER = {"A": "AAAA", "AAAA": "A"}


def still_published(rtype: str, values: Sequence[str]) -> str:
    """ "AAAA 2001:db8::201 is still published: IPv6 clients keep reaching the old host"."""
    clients = "IPv6" if rtype == "AAAA" else "IPv4"
    return (
        f"{rtype} {', '.join(sorted(values))} is still published: {clients} clients keep reaching "
        "the old host (switch it too, or delete it)"
    )


def after_switch(server: Server, name: str, rtype: str, *, changed: bool) -> str | None:
    """The sentence when RTYPE changed on the server while the other address type still has values."""
    from opskit.dns.update import read_rrset  # noqa: PLC0415 - the watch needs only the sentence

    other = OTHER.get(rtype.upper())
    if other is None or not changed:
        return None
    data = read_rrset(server, name, other)
    return still_published(other, data.values) if data is not None else None
