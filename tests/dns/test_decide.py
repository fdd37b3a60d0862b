"""The one pure verdict (`decide`) with plain values and an injected clock (issue #12 points 3-6, 9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opskit.dns.chain import chain_problem, widest
from opskit.dns.plan import make_plan
from opskit.dns.report import Dnssec, Link, NameserverAnswer, RecordReport, ZoneKeys
from opskit.dns.verdict import Lowering, Policy, decide

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
LONG_AGO = Lowering(NOW - timedelta(days=2), 3600)


def _report(name: str, rtype: str, chain: tuple[Link, ...], **more: object) -> RecordReport:
    answers = chain[-1].answers if chain and chain[-1].type == rtype else ()
    server = NameserverAnswer("ns1:53", answers, chain[-1].ttl, 1, None, chain)
    ttl = max(link.ttl or 0 for link in chain)
    fields: dict = {"keys": None, **more}
    return RecordReport(name, rtype, ttl, answers, chain, (server,), (), (), **fields)


def _decide(*records: RecordReport) -> tuple[bool, list[str], list[str]]:
    report = decide(records, policy=Policy(), lowering_for=lambda _n, _t: LONG_AGO, now=NOW)
    problems = [p for r in report.records for p in r.problems]
    notes = [n for r in report.records for n in r.notes]
    return report.ready, problems, notes


def test_loop_is_named_once_and_blocks() -> None:
    """www -> a -> b -> a is NOT READY with "CNAME loop: a -> b -> a" and no safe time."""
    chain = (
        Link("www.x.", "CNAME", 60, ("a.x.",)),
        Link("a.x.", "CNAME", 60, ("b.x.",)),
        Link("b.x.", "CNAME", 60, ("a.x.",)),
    )

    ready, problems, _ = _decide(_report("www.x.", "A", chain))

    assert not ready
    assert problems[0].startswith("CNAME loop: a.x -> b.x -> a.x (reached from www.x)")


def test_eleven_cnames_pass_twelve_do_not() -> None:
    """A chain of 11 CNAMEs is what unbound and BIND still follow; 12 is one too many."""

    def chain(n: int) -> list[Link]:
        links = [Link(f"c{i}.x.", "CNAME", 60, (f"c{i + 1}.x.",)) for i in range(n)]
        return [*links, Link(f"c{n}.x.", "A", 60, ("192.0.2.1",))]

    assert chain_problem(chain(11)) is None
    assert "CNAME chain of 12 links" in (chain_problem(chain(12)) or "")


def test_effective_ttl_is_the_largest_in_any_order() -> None:
    """Servers serving 8 s and 86400 s give 86400 s whichever is listed first."""
    short = (Link("app.x.", "A", 8, ("192.0.2.1",)),)
    long = (Link("app.x.", "A", 86400, ("192.0.2.1",)),)

    assert widest(short, [short, long])[0].ttl == 86400
    assert widest(long, [long, short])[0].ttl == 86400


def test_missing_aaaa_beside_an_a_is_a_note() -> None:
    """NODATA for AAAA where the A exists is READY with a note; AAAA alone is still gated."""
    a = _report("v4.x.", "A", (Link("v4.x.", "A", 8, ("192.0.2.4",)),))
    aaaa = _report("v4.x.", "AAAA", (Link("v4.x.", "AAAA", 3600, (), "NODATA"),))

    ready, problems, notes = _decide(a, aaaa)
    alone, _, _ = _decide(aaaa)

    assert ready, problems
    assert any("no AAAA at v4.x (IPv4 only)" in n for n in notes)
    assert not alone


def test_wildcard_owner_is_the_fix() -> None:
    """A synthesized answer's fix names the wildcard owner, not the name asked."""
    link = Link("app.wild.x.", "A", 86400, ("192.0.2.77",), wildcard="*.wild.x.")

    _, problems, _ = _decide(_report("app.wild.x.", "A", (link,)))

    assert "lower the TTL of *.wild.x A from 86400 to 300 now" in problems[0]


def test_rrsig_must_outlive_switch_plus_ttl_plus_margin() -> None:
    """An RRSIG expiring within switch + TTL + 1 h blocks; one valid for a day does not."""

    def signed(expires_in: timedelta) -> RecordReport:
        sig = Dnssec(60, 60, NOW + expires_in)
        return _report("www.s.", "A", (Link("www.s.", "A", 60, ("192.0.2.60",), dnssec=sig),))

    soon, problems, _ = _decide(signed(timedelta(minutes=30)))
    later, _, _ = _decide(signed(timedelta(days=1)))

    assert not soon
    assert "the RRSIG over www.s A expires at 01:30 UTC" in problems[0]
    assert later


def test_ds_matching_no_key_blocks_and_the_plan_refuses() -> None:
    """A DS that matches no DNSKEY is NOT READY, and a plan built on it is not feasible."""
    keys = ZoneKeys("s.", ("tag 10155 (KSK)",), ("999 13 2 00",), ())
    record = _report("www.s.", "A", (Link("www.s.", "A", 60, ("192.0.2.60",)),), keys=keys)

    report = decide([record], policy=Policy(), lowering_for=lambda _n, _t: LONG_AGO, now=NOW)
    plan = make_plan(
        name="www.s.",
        rtype="A",
        current_ttl=60,
        target_ttl=300,
        switch_at=NOW + timedelta(days=1),
        now=NOW,
        blockers=report.records[0].blockers,
    )

    assert not report.ready
    assert "matches no DNSKEY of s" in report.records[0].problems[0]
    assert not plan.feasible
