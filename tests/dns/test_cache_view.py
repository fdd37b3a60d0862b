"""The cache view never primes the caches it measures; clamps and pre-lowering copies told apart (#12.7)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dns.flags
import dns.message
import dns.query
import pytest

from opskit.dns.cacheverdict import reading
from opskit.errors import ExitCode
from tests.conftest import CliResult, Invoke
from tests.servers.dns_case import CaseLab, case_lab, zone_text

pytestmark = pytest.mark.dns

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
BODY = """
hour   3600 IN A 192.0.2.1
short     5 IN A 192.0.2.5
moved   300 IN A 192.0.2.30
"""


@pytest.fixture
def caches() -> Iterator[CaseLab]:
    """nsd serving cache.test; unbound that snoops, one that refuses RD=0, one that clamps to 60 s."""
    with case_lab(
        nsd={"cache.test": zone_text("cache.test", BODY)},
        unbound={
            "snoop": "access-control: 127.0.0.0/8 allow_snoop",
            "plain": "access-control: 127.0.0.0/8 allow",
            "clamp": "access-control: 127.0.0.0/8 allow_snoop\ncache-min-ttl: 60",
        },
    ) as running:
        yield running


def _ask(resolver: str, name: str, *, rd: bool) -> list[tuple[int, str]]:
    host, port = resolver.split(":")
    query = dns.message.make_query(name, "A")
    if not rd:
        query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, host, port=int(port), timeout=2)
    return [(rrset.ttl, rrset[0].to_text()) for rrset in response.answer]


def _check(opskit: Invoke, lab: CaseLab, name: str, *args: str, expect: ExitCode) -> CliResult:
    """`dns check NAME --type A` against the lab's nsd, with `args` (resolvers, the lowering)."""
    return opskit(
        "dns", "check", name, "--type", "A", "--nameserver", lab.nsd, *args, expect=expect
    )


def test_checking_through_resolvers_caches_nothing(opskit: Invoke, caches: CaseLab) -> None:
    """After `dns check` peeks at two resolvers, neither holds the 1 h record it did not hold before."""
    snoop, plain = caches.resolvers["snoop"], caches.resolvers["plain"]
    result = _check(
        opskit, caches, "hour.cache.test",
        "--resolver", snoop, "--resolver", plain, expect=ExitCode.NEGATIVE,
    )  # fmt: skip
    time.sleep(1.1)  # a copy fetched by the check would now show 3599 s or less

    assert _ask(snoop, "hour.cache.test", rd=False) == []  # a referral: not cached
    assert _ask(plain, "hour.cache.test", rd=True) == [(3600, "192.0.2.1")]  # fetched just now
    assert f"resolver {plain}: cache view unknown (refuses cache peeks" in result.stdout
    assert "still holds" not in result.stdout


def test_a_clamping_resolver_is_told_from_an_old_copy(opskit: Invoke, caches: CaseLab) -> None:
    """A clamp reporting 60 s for a 5 s record long after a lowering is a clamp, safe; not an old TTL."""
    clamp = caches.resolvers["clamp"]
    _ask(clamp, "short.cache.test", rd=True)  # a client of that resolver asks
    lowered = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    result = _check(
        opskit, caches, "short.cache.test",
        "--resolver", clamp, "--lowered-at", lowered, "--previous-ttl", "30s", expect=ExitCode.OK,
    )  # fmt: skip

    assert f"resolver {clamp} clamps TTLs (cache-min-ttl of at least" in result.stdout
    assert "(the lowering + its clamp)" in result.stdout
    assert "from before the lowering:" not in result.stdout


def test_a_copy_from_before_the_lowering_is_not_called_a_clamp(
    opskit: Invoke, caches: CaseLab
) -> None:
    """A resolver holding the 300 s copy fetched before a lowering to 5 s is that, not a clamp."""
    snoop = caches.resolvers["snoop"]
    _ask(snoop, "moved.cache.test", rd=True)  # cached with the old 300 s TTL
    lowered = datetime.now(UTC).isoformat()
    caches.write_nsd_zone(
        "cache.test", zone_text("cache.test", BODY.replace("moved   300", "moved 5"), serial=2)
    )

    result = _check(
        opskit, caches, "moved.cache.test",
        "--resolver", snoop, "--lowered-at", lowered, "--previous-ttl", "300s",
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip

    assert f"resolver {snoop} still holds a copy from before the lowering" in result.stdout
    assert "clamps TTLs" not in result.stdout
    assert "NOT READY: moved.cache.test A; safe from" in result.stdout


def test_reading_tells_clamp_from_old_copy_both_ways() -> None:
    """More left than a pre-lowering copy can have is a clamp; less is an old copy; unknown is either."""
    lowered = NOW - timedelta(seconds=100)

    clamp = reading(250, 5, lowered_at=lowered, previous_ttl_s=300, now=NOW)
    old = reading(190, 5, lowered_at=lowered, previous_ttl_s=300, now=NOW)
    unknown = reading(190, 5, lowered_at=None, previous_ttl_s=None, now=NOW)
    fine = reading(5, 5, lowered_at=None, previous_ttl_s=None, now=NOW)

    assert (clamp, old, unknown, fine) == ("clamp", "old-ttl", "either", "conforming")
