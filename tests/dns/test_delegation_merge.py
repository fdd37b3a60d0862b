"""The parent's delegation against the zone's NS set, decided from plain values (no servers)."""

from __future__ import annotations

from opskit.dns.delegation import Delegation, findings, merge
from opskit.dns.report import NameserverAnswer
from opskit.dns.servers import Server, ServerChoice

CHOICE = ServerChoice(auth_port=5353)
NS1, NS3 = Server("192.0.2.1", 5353, "ns1.z.test."), Server("192.0.2.3", 5353, "ns3.z.test.")


def _answer(server: Server, data: str, ttl: int) -> NameserverAnswer:
    return NameserverAnswer(str(server), (data,), ttl, 1, None)


def test_a_server_only_the_zone_lists_is_named_when_it_serves_old_data() -> None:
    """ns3 is in the zone's NS set but not at the parent; serving TTL 86400 it blocks, with its fix."""
    parent = Delegation("test.", ("ns1.z.test.",), 3600)
    servers, one_sided, notes = merge(
        ("ns1.z.test.", "ns3.z.test."), 3600, {"ns1.z.test.": (NS1,), "ns3.z.test.": (NS3,)},
        parent, {}, CHOICE,
    )  # fmt: skip

    problems, _ = findings(
        one_sided,
        [_answer(NS1, "192.0.2.50", 300), _answer(NS3, "192.0.2.10", 86400)],
        "a.z.test.",
        "A",
    )

    assert set(servers) == {NS1, NS3}
    assert any("NS sets differ" in n for n in notes)
    assert problems == [
        "ns3.z.test (192.0.2.3) is in the zone's NS set but not in the parent's delegation (test); it "
        "serves a.z.test A 192.0.2.10 with TTL 86400, unlike the other servers: resolvers can still "
        "reach it and get that answer; make ns3.z.test serve the current zone, and list it at the "
        "parent or drop it from the zone's NS set"
    ]


def test_a_one_sided_server_serving_current_data_is_a_note_not_a_blocker() -> None:
    """The same answer from a server only one side lists is said, and does not block."""
    parent = Delegation(
        "test.", ("ns1.z.test.", "ns3.z.test."), 3600, {"ns3.z.test.": ("192.0.2.3",)}
    )
    _, one_sided, _ = merge(
        ("ns1.z.test.",), 3600, {"ns1.z.test.": (NS1,)}, parent, {"ns3.z.test.": (NS3,)}, CHOICE
    )

    problems, notes = findings(
        one_sided,
        [_answer(NS1, "192.0.2.50", 300), _answer(NS3, "192.0.2.50", 300)],
        "a.z.test.",
        "A",
    )

    assert problems == []
    assert notes == [
        "ns3.z.test (192.0.2.3) is in the parent's delegation (test) but not in the zone's NS set; "
        "it serves a.z.test A 192.0.2.50 with TTL 300"
    ]


def test_an_unread_parent_is_said_and_only_the_zone_servers_are_asked() -> None:
    """When the parent cannot be asked, the note says what that leaves unchecked and how to pin it."""
    servers, one_sided, notes = merge(
        ("ns1.z.test.",), 3600, {"ns1.z.test.": (NS1,)}, "no server answered for test.", {}, CHOICE
    )

    assert servers == (NS1,)
    assert one_sided == {}
    assert notes[0].startswith("the parent's delegation was not checked (no server answered")
