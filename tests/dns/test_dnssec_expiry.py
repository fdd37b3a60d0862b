"""Signed zones: the DS at the parent matches a DNSKEY, and no RRSIG runs out too soon (issue #12.9)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dns.dnssec
import dns.message
import dns.query
import dns.rdatatype
import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.servers.dns_case import CaseLab, case_lab

pytestmark = pytest.mark.dns

LOWERED = (datetime.now(UTC) - timedelta(days=2)).isoformat()
PARENT_HEAD = """$ORIGIN test.
$TTL 86400
@        86400 IN SOA a.nic.test. hostmaster.nic.test. 1 7200 3600 1209600 3600
@        86400 IN NS  a.nic.test.
a.nic    86400 IN A   127.0.0.4
"""


def _zone(origin: str) -> str:
    """A small zone for knot to sign: every TTL at most a minute (knot's refresh rule)."""
    return (
        f"$ORIGIN {origin}.\n$TTL 60\n"
        "@ 60 IN SOA ns1.case.test. hostmaster.case.test. 1 3600 600 86400 15\n"
        "@ 60 IN NS ns1.case.test.\n"
        "www 60 IN A 192.0.2.60\n"
    )


def _ds(lab: CaseLab, origin: str) -> str:
    """The DS of the zone's key-signing key, as the parent would publish it."""
    query = dns.message.make_query(origin, "DNSKEY")
    deadline = time.monotonic() + 10
    while True:  # knot loads and signs its zones one after the other
        answer = dns.query.udp(query, "127.0.0.3", port=lab.port, timeout=2).answer
        keys = [k for rrset in answer for k in rrset if k.flags & 1]
        if keys:
            return dns.dnssec.make_ds(f"{origin}.", keys[0], "SHA256").to_text()
        assert time.monotonic() < deadline, f"knot did not sign {origin}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def signed() -> Iterator[tuple[CaseLab, CaseLab]]:
    """knot signing good.test (RRSIGs for a week), soon.test (20 min) and wrong.test; `test.` with DSes.

    The parent is a second lab started once knot has made its keys: pins carry the port, so the
    parent and the child may listen on different ports.
    """
    zones = {name: _zone(name) for name in ("good.test", "soon.test", "wrong.test")}
    lifetimes = {"good.test": 7 * 86400, "soon.test": 1200, "wrong.test": 7 * 86400}
    with case_lab(knot=zones, signing=lifetimes) as child:
        delegations = ""
        for name in ("good", "soon", "wrong"):
            ds = _ds(child, f"{name}.test")
            if name == "wrong":  # a DS left from a key that is gone: flip the digest
                ds = ds[:-4] + ("0000" if not ds.endswith("0000") else "1111")
            delegations += f"{name} 3600 IN NS ns1.case.test.\n{name} 3600 IN DS {ds}\n"
        with case_lab(parent={"test": PARENT_HEAD + delegations}) as parent:
            yield child, parent


def _check(opskit: Invoke, labs: tuple[CaseLab, CaseLab], name: str, expect: int) -> str:
    child, parent = labs
    result = opskit(
        "dns",
        "check",
        name,
        "--type",
        "A",
        "--nameserver",
        f"ns1.case.test={child.knot}",
        "--nameserver",
        f"a.nic.test={parent.parent}",
        "--lowered-at",
        LOWERED,
        "--previous-ttl",
        "60s",
        expect=expect,
    )
    return result.stdout


def test_healthy_signed_zone_is_ready(opskit: Invoke, signed: tuple[CaseLab, CaseLab]) -> None:
    """A signed zone whose DS matches its key and whose signatures last a week is READY."""
    out = _check(opskit, signed, "www.good.test", ExitCode.OK)

    assert "the DS at the parent matches DNSKEY" in out


def test_rrsig_expiring_before_switch_plus_ttl_plus_margin_is_not_ready(
    opskit: Invoke, signed: tuple[CaseLab, CaseLab]
) -> None:
    """RRSIGs that expire in 20 minutes, sooner than the switch + TTL + margin, are NOT READY."""
    out = _check(opskit, signed, "www.soon.test", ExitCode.NEGATIVE)

    assert "the RRSIG over www.soon.test A expires at" in out
    assert "NOT READY" in out.splitlines()[-1]


def test_ds_matching_no_dnskey_is_not_ready(
    opskit: Invoke, signed: tuple[CaseLab, CaseLab]
) -> None:
    """A DS at the parent that matches no DNSKEY of the zone is NOT READY, saying why."""
    out = _check(opskit, signed, "www.wrong.test", ExitCode.NEGATIVE)

    assert "matches no DNSKEY of wrong.test" in out
    assert "validating resolvers answer SERVFAIL" in out


def test_plan_past_the_signatures_holds_only_if_the_signer_refreshes(
    opskit: Invoke, signed: tuple[CaseLab, CaseLab]
) -> None:
    """A switch planned after today's RRSIGs expire is PLAN OK only "if the signer refreshes" them."""
    child, parent = signed
    switch_at = (datetime.now(UTC) + timedelta(days=8)).isoformat()

    result = opskit(
        "dns",
        "plan",
        "www.good.test",
        "--type",
        "A",
        "--switch-at",
        switch_at,
        "--nameserver",
        f"ns1.case.test={child.knot}",
        "--nameserver",
        f"a.nic.test={parent.parent}",
        expect=ExitCode.OK,
    )

    assert "PLAN OK if" in result.stdout
    assert (
        "the signer refreshes it in time (the RRSIG over www.good.test A expires" in result.stdout
    )
