"""The embedded authoritative server answers like knot and accepts only signed updates."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from opskit.demo.authserver import AuthServer, TsigKey, demo_zone
from opskit.demo.loop import BackgroundLoop

ZONE = demo_zone(
    "night.test.",
    records={
        "dispatch": (86400, "A", "127.0.0.11"),
        "www": (60, "CNAME", "dispatch"),
        "deep.empty": (60, "A", "192.0.2.1"),
    },
    ns_address="127.0.0.1",
    negative_ttl_s=15,
)


@pytest.fixture
def server(bg_loop: BackgroundLoop) -> Iterator[AuthServer]:
    """The demo zone served on a free port of 127.0.0.1."""
    auth = AuthServer(ZONE, origin="night.test", tsig=TsigKey.generate())
    bg_loop.run(auth.start())
    try:
        yield auth
    finally:
        bg_loop.run(auth.stop())


def _query(server: AuthServer, name: str, rdtype: str = "A", *, tcp: bool = False):
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD
    ask = dns.query.tcp if tcp else dns.query.udp
    return ask(query, server.host, port=server.port, timeout=2)


def _keyring(key: TsigKey):
    return dns.tsigkeyring.from_text({key.name: (key.algorithm, key.secret)})


def test_answers_authoritatively_over_udp_and_tcp(server: AuthServer) -> None:
    """A record comes back with AA set, without RA, and the same over UDP and TCP."""
    for tcp in (False, True):
        response = _query(server, "dispatch.night.test", tcp=tcp)

        assert response.flags & dns.flags.AA
        assert not response.flags & dns.flags.RA
        assert response.answer[0].ttl == 86400
        assert [rd.address for rd in response.answer[0]] == ["127.0.0.11"]


def test_follows_a_cname_chain_inside_the_zone(server: AuthServer) -> None:
    """A CNAME is answered with its target's records, each link with its own TTL."""
    response = _query(server, "www.night.test")

    assert [(str(r.name), r.ttl) for r in response.answer] == [
        ("www.night.test.", 60),
        ("dispatch.night.test.", 86400),
    ]


def test_negative_answers_carry_the_soa_with_the_negative_ttl(server: AuthServer) -> None:
    """NXDOMAIN and NODATA put the SOA in authority with TTL min(SOA TTL, MINIMUM) (RFC 2308)."""
    missing = _query(server, "nope.night.test")
    nodata = _query(server, "dispatch.night.test", "AAAA")
    empty_non_terminal = _query(server, "empty.night.test")

    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert nodata.rcode() == dns.rcode.NOERROR
    assert not nodata.answer
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR
    for response in (missing, nodata, empty_non_terminal):
        assert response.authority[0].rdtype == dns.rdatatype.SOA
        assert response.authority[0].ttl == 15


def test_refuses_names_outside_its_zone(server: AuthServer) -> None:
    """A question for another zone is REFUSED without AA, like a lame server."""
    response = _query(server, "example.com")

    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA


def test_signed_update_changes_the_record_and_bumps_the_serial(server: AuthServer) -> None:
    """An RFC 2136 update signed with the TSIG key replaces the RRset, new TTL included."""
    assert server.tsig is not None
    serial = server.serial()
    update = dns.update.UpdateMessage("night.test.", keyring=_keyring(server.tsig))
    update.replace("dispatch", 300, "A", "127.0.0.12")

    response = dns.query.tcp(update, server.host, port=server.port, timeout=2)

    assert response.rcode() == dns.rcode.NOERROR
    assert response.had_tsig
    assert server.records("dispatch") == (300, ["127.0.0.12"])
    assert server.serial() == serial + 1
    answer = _query(server, "dispatch.night.test")
    assert (answer.answer[0].ttl, answer.answer[0][0].address) == (300, "127.0.0.12")


def test_unsigned_and_badly_signed_updates_are_refused(server: AuthServer) -> None:
    """Without the key the zone does not change: NOTAUTH, and a bad signature is reported as such."""
    unsigned = dns.update.UpdateMessage("night.test.")
    unsigned.replace("dispatch", 300, "A", "127.0.0.66")
    wrong_secret = dns.update.UpdateMessage("night.test.", keyring=_keyring(TsigKey.generate()))
    wrong_secret.replace("dispatch", 300, "A", "127.0.0.66")
    unknown_key = dns.update.UpdateMessage(
        "night.test.", keyring=_keyring(TsigKey.generate("intruder."))
    )
    unknown_key.replace("dispatch", 300, "A", "127.0.0.66")

    response = dns.query.tcp(unsigned, server.host, port=server.port, timeout=2)
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.query.tcp(wrong_secret, server.host, port=server.port, timeout=2)
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.query.tcp(unknown_key, server.host, port=server.port, timeout=2)

    assert response.rcode() == dns.rcode.NOTAUTH
    assert server.records("dispatch") == (86400, ["127.0.0.11"])


def test_prerequisites_are_checked_before_anything_changes(server: AuthServer) -> None:
    """An update whose prerequisite fails (RRset absent) changes nothing and says why."""
    assert server.tsig is not None
    update = dns.update.UpdateMessage("night.test.", keyring=_keyring(server.tsig))
    update.absent("dispatch", "A")
    update.replace("dispatch", 5, "A", "127.0.0.66")

    response = dns.query.tcp(update, server.host, port=server.port, timeout=2)

    assert response.rcode() == dns.rcode.YXRRSET
    assert server.records("dispatch") == (86400, ["127.0.0.11"])


def test_delete_of_one_record_and_of_a_name(server: AuthServer) -> None:
    """Deleting one value, then a whole name, leaves the rest of the zone alone."""
    assert server.tsig is not None
    update = dns.update.UpdateMessage("night.test.", keyring=_keyring(server.tsig))
    update.add("dispatch", 86400, "A", "127.0.0.12")
    update.delete("dispatch", "A", "127.0.0.11")
    update.delete("www")

    response = dns.query.tcp(update, server.host, port=server.port, timeout=2)

    assert response.rcode() == dns.rcode.NOERROR
    assert server.records("dispatch") == (86400, ["127.0.0.12"])
    assert _query(server, "www.night.test").rcode() == dns.rcode.NXDOMAIN


def test_stop_releases_both_ports(bg_loop: BackgroundLoop) -> None:
    """After stop, the UDP and TCP ports can be bound again: nothing is left listening."""
    auth = AuthServer(ZONE, origin="night.test")
    bg_loop.run(auth.start())
    bg_loop.run(auth.stop())

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((auth.host, auth.port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((auth.host, auth.port))
