"""`dns check` asks the parent's delegation and the zone's NS set, every address of each (issue #12.1, #12.10).

Each test writes its own zones: a parent `example.net` on 127.0.0.21 delegating `eu.example.net`, whose
servers sit on other loopback addresses, all on one port (NS records carry no port: --auth-port).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.servers.dns_zone_lab import Auth, ZoneLab, zone, zone_lab

pytestmark = pytest.mark.dns

PARENT, NS1, NS2, OLD = "127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"


def _parent(delegation: str) -> str:
    return zone(
        "example.net",
        f"ns 3600 IN A {PARENT}\n{delegation}",
        ns=["ns.example.net"],
    )


def _child(records: str, ns: tuple[str, ...] = ("ns1.eu.example.net",), serial: int = 2) -> str:
    return zone("eu.example.net", f"ns1 3600 IN A {NS1}\n{records}", ns=ns, serial=serial)


CURRENT = "app 300 IN A 192.0.2.50"
OLD_DATA = "app 86400 IN A 192.0.2.10\nns2 3600 IN A 127.0.0.23"


@pytest.fixture(scope="module")
def forgotten() -> Iterator[ZoneLab]:
    """The parent still delegates to ns2, which the zone dropped and which serves the day-long TTL."""
    parent = _parent(
        "eu 172800 IN NS ns1.eu.example.net.\neu 172800 IN NS ns2.eu.example.net.\n"
        f"ns1.eu 172800 IN A {NS1}\nns2.eu 172800 IN A {NS2}"
    )
    old = _child(OLD_DATA, ns=("ns1.eu.example.net", "ns2.eu.example.net"), serial=1)
    with zone_lab(
        [
            Auth(PARENT, {"example.net": parent}),
            Auth(NS1, {"eu.example.net": _child(CURRENT)}),
            Auth(NS2, {"eu.example.net": old}),
        ]
    ) as lab:
        yield lab


def _pins(lab: ZoneLab) -> list[str]:
    return [
        "--auth-port",
        str(lab.port),
        "--nameserver",
        f"ns.example.net={lab.at(PARENT)}",
        "--nameserver",
        f"ns1.eu.example.net={lab.at(NS1)}",
    ]


def test_forgotten_secondary_in_the_delegation_is_not_ready(
    opskit: Invoke, forgotten: ZoneLab
) -> None:
    """A server only the parent lists, still serving TTL 86400, is named with its fix: NOT READY."""
    result = opskit(
        "dns", "check", "app.eu.example.net", "--type", "A", *_pins(forgotten),
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip

    out = result.stdout
    assert (
        "ns2.eu.example.net (127.0.0.23) is in the parent's delegation (example.net) but not in "
        "the zone's NS set; it serves app.eu.example.net A 192.0.2.10 with TTL 86400"
    ) in out
    assert "remove ns2.eu.example.net from the delegation at the parent's registrar" in out
    assert "NS sets differ" in out
    assert "NOT READY" in out


def test_a_pinned_parent_that_refers_is_followed_not_lame(
    opskit: Invoke, forgotten: ZoneLab
) -> None:
    """Asking only the parent's server: its referral is followed to both child servers, none is lame."""
    result = opskit(
        "dns", "check", "app.eu.example.net", "--type", "A", "--auth-port", str(forgotten.port),
        "--nameserver", forgotten.at(PARENT), "--json",
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip

    record = json.loads(result.stdout)["records"][0]
    asked = {ns["server"]: ns for ns in record["nameservers"]}
    assert set(asked) == {forgotten.at(NS1), forgotten.at(NS2)}
    assert all(ns["error"] is None for ns in asked.values())
    assert asked[forgotten.at(NS2)]["ttl"] == 86400
    assert not any("lame" in p for p in record["problems"])


@pytest.fixture(scope="module")
def glued() -> Iterator[ZoneLab]:
    """The parent's glue sends ns1 to an old address that still serves the old zone."""
    parent = _parent(f"eu 3600 IN NS ns1.eu.example.net.\nns1.eu 3600 IN A {OLD}")
    with zone_lab(
        [
            Auth(PARENT, {"example.net": parent}),
            Auth(NS1, {"eu.example.net": _child(CURRENT)}),
            Auth(OLD, {"eu.example.net": _child("app 86400 IN A 192.0.2.10", serial=1)}),
        ]
    ) as lab:
        yield lab


def test_glue_that_differs_from_the_zone_is_asked_and_named(opskit: Invoke, glued: ZoneLab) -> None:
    """Glue 127.0.0.24 vs the zone's 127.0.0.22: both are asked, the glue address serves old data."""
    result = opskit(
        "dns", "check", "app.eu.example.net", "--type", "A", "--auth-port", str(glued.port),
        "--nameserver", f"ns.example.net={glued.at(PARENT)}",
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip

    out = result.stdout
    assert "glue differs: the parent gives ns1.eu.example.net 127.0.0.24" in out
    assert (
        "ns1.eu.example.net (127.0.0.24) is the parent's glue for ns1.eu.example.net but not an "
        "address the zone gives it; it serves app.eu.example.net A 192.0.2.10 with TTL 86400"
    ) in out
    assert "fix the glue of ns1.eu.example.net at the parent's registrar (127.0.0.22)" in out


@pytest.fixture(scope="module")
def dual() -> Iterator[ZoneLab]:
    """ns1 has an IPv4 and an IPv6 address (::1), both serving the zone; NS TTLs differ by side."""
    parent = _parent(
        f"eu 172800 IN NS ns1.eu.example.net.\nns1.eu 172800 IN A {NS1}\nns1.eu 172800 IN AAAA ::1"
    )
    child = _child(f"{CURRENT}\nns1 3600 IN AAAA ::1")
    with zone_lab(
        [
            Auth(PARENT, {"example.net": parent}),
            Auth(NS1, {"eu.example.net": child}),
            Auth("::1", {"eu.example.net": child}),
        ]
    ) as lab:
        yield lab


def test_every_address_of_every_server_is_asked_and_ready(opskit: Invoke, dual: ZoneLab) -> None:
    """Both addresses of ns1 answer alike: READY, and the NS TTL difference is said, not a blocker."""
    result = opskit(
        "dns", "check", "app.eu.example.net", "--type", "A", "--auth-port", str(dual.port),
        "--nameserver", f"ns.example.net={dual.at(PARENT)}",
        "--lowered-at", "2020-01-01T00:00:00Z", "--previous-ttl", "1d", "--json",
        expect=ExitCode.OK,
    )  # fmt: skip

    report = json.loads(result.stdout)
    asked = {ns["server"] for ns in report["records"][0]["nameservers"]}
    assert asked == {dual.at(NS1), dual.at("::1")}


@pytest.mark.parametrize(("flag", "asked", "left"), [("-4", NS1, "::1"), ("-6", "::1", NS1)])
def test_address_family_chooses_the_addresses_asked(
    opskit: Invoke, dual: ZoneLab, flag: str, asked: str, left: str
) -> None:
    """-4 asks only IPv4 addresses, -6 only IPv6: the other family is named, and not a blocker."""
    result = opskit(
        "dns", "check", "app.eu.example.net", "--type", "A", flag, "--auth-port", str(dual.port),
        "--nameserver", f"ns.example.net={dual.at(PARENT)}",
        "--lowered-at", "2020-01-01T00:00:00Z", "--previous-ttl", "1d",
        expect=ExitCode.OK,
    )  # fmt: skip

    assert dual.at(asked) in result.stdout
    assert f"not asked ({flag}): ns1.eu.example.net {left}" in result.stdout
    assert "NS TTL differs: 172800 s at the parent, 3600 s in the zone" in result.stdout


def test_naming_one_server_does_not_narrow_the_servers_asked(opskit: Invoke, dual: ZoneLab) -> None:
    """--nameserver ADDR:PORT alone starts the walk: every address of the NS set is asked, same port."""
    result = opskit(
        "dns", "check", "app.eu.example.net", "--type", "A", "--nameserver", dual.at(NS1),
        "--lowered-at", "2020-01-01T00:00:00Z", "--previous-ttl", "1d", "--json",
        expect=ExitCode.OK,
    )  # fmt: skip

    record = json.loads(result.stdout)["records"][0]
    assert {ns["server"] for ns in record["nameservers"]} == {dual.at(NS1), dual.at("::1")}
