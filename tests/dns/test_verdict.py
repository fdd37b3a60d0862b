"""Pure decisions with an injected clock: verdicts, plans, flip predictions, key files, server syntax."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from opskit.dns.plan import make_plan
from opskit.dns.report import Link, NameserverAnswer, RecordReport, ResolverAnswer
from opskit.dns.servers import BadServer, Server, parse_nameservers
from opskit.dns.tsigkey import BadKey, parse_key_text
from opskit.dns.verdict import Lowering, Policy, judge, judge_record
from opskit.dns.wait import RESOLVER, _Memory, judge_round, predict_flip
from opskit.errors import UsageError

NOW = datetime(2026, 11, 23, 1, 12, tzinfo=UTC)


def _record(
    ttl: int,
    *,
    servers: tuple[tuple[str, str, int, int], ...] | None = None,
    resolvers: tuple[ResolverAnswer, ...] = (),
) -> RecordReport:
    link = Link("dispatch.example.net.", "A", ttl, ("192.0.2.10",))
    rows = servers or (("ns1:53", "192.0.2.10", ttl, 5), ("ns2:53", "192.0.2.10", ttl, 5))
    nameservers = tuple(
        NameserverAnswer(s, (a,), t, serial, None, (Link("dispatch.example.net.", "A", t, (a,)),))
        for s, a, t, serial in rows
    )
    return RecordReport(
        "dispatch.example.net.", "A", ttl, ("192.0.2.10",), (link,), nameservers, resolvers, ()
    )


def test_day_long_ttl_gives_the_fix_and_the_safe_time() -> None:
    """86400 s: NOT READY, lower to 300 now, safe from tomorrow at the same minute."""
    verdict = judge_record(_record(86400), policy=Policy(), lowering=None, now=NOW)

    assert not verdict.ready
    assert verdict.safe_after == NOW + timedelta(days=1)
    assert verdict.problems[0].endswith(
        "lower the TTL of dispatch.example.net A from 86400 to 300 now; "
        "the switch is safe from 2026-11-24 01:12 UTC"
    )


def test_journaled_lowering_gives_safe_after() -> None:
    """Lowered at 00:00 from 3600 s: safe from 01:00, so READY at 01:12."""
    lowering = Lowering(NOW.replace(hour=0, minute=0), 3600, "dispatch.example.net.", "A")

    verdict = judge_record(_record(300), policy=Policy(), lowering=lowering, now=NOW)

    assert verdict.ready
    assert verdict.safe_after == NOW.replace(hour=1, minute=0)


def test_lowering_of_another_name_does_not_count() -> None:
    """A lowering journaled for another record leaves the caveat in place."""
    lowering = Lowering(NOW - timedelta(days=3), 86400, "other.example.net.", "A")

    verdict = judge_record(_record(300), policy=Policy(), lowering=lowering, now=NOW)

    assert verdict.ready
    assert verdict.safe_after is None
    assert "TTL is 300 s now; safe only if it was lowered at least 86400 s ago" in verdict.notes[0]


def test_resolver_still_holding_an_old_ttl_is_not_ready() -> None:
    """A cache holding 80000 s left (an old TTL) is the reason, with when it lets go."""
    held = ResolverAnswer("127.0.0.1:5354", ("192.0.2.10",), 80000, None)

    verdict = judge_record(_record(300, resolvers=(held,)), policy=Policy(), lowering=None, now=NOW)

    assert not verdict.ready
    assert verdict.safe_after == NOW + timedelta(seconds=80000)
    assert "resolver 127.0.0.1:5354 still holds" in verdict.problems[0]


def test_resolver_evidence_makes_a_low_ttl_ready_now() -> None:
    """A cache that already held the record with no more than the new TTL is evidence."""
    held = ResolverAnswer(
        "127.0.0.1:5354", ("192.0.2.10",), 120, None, serves_until=NOW + timedelta(seconds=120)
    )

    verdict = judge_record(_record(300, resolvers=(held,)), policy=Policy(), lowering=None, now=NOW)

    assert verdict.ready
    assert verdict.safe_after == NOW
    assert "127.0.0.1:5354 may serve 192.0.2.10 until 01:14:00 UTC" in verdict.notes


def test_primed_resolver_is_no_evidence() -> None:
    """An answer the probe itself may have fetched does not prove the lowering is old."""
    primed = ResolverAnswer("127.0.0.1:5354", ("192.0.2.10",), 300, None, primed=True)

    verdict = judge_record(
        _record(300, resolvers=(primed,)), policy=Policy(), lowering=None, now=NOW
    )

    assert verdict.safe_after is None
    assert any("cache view unknown" in n for n in verdict.notes)


def test_same_serial_different_answers_disagree() -> None:
    """Equal serials with different addresses are a disagreement, not agreement."""
    rows = (("ns1:53", "192.0.2.10", 300, 9), ("ns2:53", "192.0.2.11", 300, 9))

    verdict = judge_record(_record(300, servers=rows), policy=Policy(), lowering=None, now=NOW)

    assert not verdict.ready
    assert "disagree under the same SOA serial 9" in verdict.problems[0]


def test_serials_compare_with_rfc1982_wraparound() -> None:
    """Serial 1 is newer than 4294967295 (RFC 1982): the server at the high number lags."""
    rows = (("ns1:53", "192.0.2.10", 300, 1), ("ns2:53", "192.0.2.10", 300, 4294967295))

    verdict = judge_record(_record(300, servers=rows), policy=Policy(), lowering=None, now=NOW)

    assert "newest 1; ns2:53 has 4294967295" in verdict.problems[0]


def test_no_server_answering_is_blocked() -> None:
    """Every nameserver failing is blocked, not just NOT READY."""
    dead = (NameserverAnswer("ns1:53", (), None, None, "timed out (3 tries of 2 s)"),)
    record = RecordReport("x.", "A", None, (), (), dead, (), ())

    verdict = judge_record(record, policy=Policy(), lowering=None, now=NOW)
    overall = judge([(record, verdict)], NOW)

    assert verdict.blocked
    assert overall.blocked
    assert overall.verdict == "BLOCKED: no usable answer for x A"


def test_plan_latest_lowering_and_last_old_answer() -> None:
    """TTL 86400, switch at 02:00 in two days: lower by 02:00 tomorrow; old answers end 02:05:01."""
    switch = NOW.replace(hour=2, minute=0) + timedelta(days=2)

    plan = make_plan(
        name="d.example.net.",
        rtype="A",
        current_ttl=86400,
        target_ttl=300,
        switch_at=switch,
        now=NOW,
    )

    assert plan.feasible
    assert plan.lower_by == switch - timedelta(days=1)
    assert plan.last_old_answer == switch + timedelta(seconds=301)


def test_plan_that_is_too_late_says_when_it_could_be_safe() -> None:
    """A switch in an hour with a day-long TTL is not feasible; safe from now + 1 day."""
    plan = make_plan(
        name="d.",
        rtype="A",
        current_ttl=86400,
        target_ttl=300,
        switch_at=NOW + timedelta(hours=1),
        now=NOW,
    )

    assert not plan.feasible
    assert plan.safe_from == NOW + timedelta(days=1)


def test_plan_too_late_keeps_old_answers_until_the_old_ttl_from_now() -> None:
    """Lowered too late, caches keep the old answer a full old TTL from now, not 5 min after the switch."""
    plan = make_plan(
        name="d.",
        rtype="A",
        current_ttl=86400,
        target_ttl=300,
        switch_at=NOW + timedelta(hours=1),
        now=NOW,
    )

    assert plan.last_old_answer == NOW + timedelta(days=1, seconds=1)


def test_plan_with_a_low_ttl_and_no_history_is_ok_with_a_caveat() -> None:
    """A TTL already at 8 s: the plan works if it was lowered long ago, and says so."""
    plan = make_plan(
        name="d.",
        rtype="A",
        current_ttl=8,
        target_ttl=300,
        switch_at=NOW + timedelta(hours=1),
        now=NOW,
    )

    assert plan.feasible
    assert plan.problems == ()
    assert "at least 86400 s before the switch" in plan.caveats[0]
    assert plan.last_old_answer == NOW + timedelta(hours=1, seconds=9)


def test_plan_names_the_link_whose_ttl_must_go_down() -> None:
    """For a CNAME chain the step names the long link, not the name being switched."""
    plan = make_plan(
        name="www.example.test.",
        rtype="A",
        current_ttl=86400,
        target_ttl=300,
        switch_at=NOW + timedelta(days=3),
        now=NOW,
        lower_what="edge.example.test CNAME",
    )

    assert "lower the TTL of edge.example.test CNAME from 86400 to 300 s" in plan.steps[0].what


def test_plan_for_a_switch_in_the_past_is_bad_input() -> None:
    """A --switch-at before now is a typo to fix, not a timeline."""
    with pytest.raises(UsageError, match="in the past"):
        make_plan(
            name="d.",
            rtype="A",
            current_ttl=300,
            target_ttl=300,
            switch_at=NOW - timedelta(days=1),
            now=NOW,
        )


def test_not_ready_safe_time_survives_a_record_with_unknown_history() -> None:
    """A 24 h A record next to an 8 s one of unknown history: NOT READY still gives the 24 h safe time."""
    long, short = _record(86400), _record(8)
    verdicts = [
        (r, judge_record(r, policy=Policy(), lowering=None, now=NOW)) for r in (long, short)
    ]

    overall = judge(verdicts, NOW)

    assert not overall.ready
    assert overall.safe_after == NOW + timedelta(days=1)
    assert "safe from 2026-11-24 01:12 UTC" in overall.verdict


def test_name_that_does_not_exist_is_said_so() -> None:
    """NXDOMAIN is READY within its negative TTL, and the verdict says the name does not exist yet."""
    link = Link("new.example.net.", "A", 15, (), "NXDOMAIN")
    ns = tuple(NameserverAnswer(s, (), 15, 5, None, (link,)) for s in ("ns1:53", "ns2:53"))
    record = RecordReport("new.example.net.", "A", 15, (), (link,), ns, (), ())
    verdict = judge_record(record, policy=Policy(), lowering=None, now=NOW)

    overall = judge([(record, verdict)], NOW)

    assert overall.ready
    assert any(
        "does not exist (NXDOMAIN); caches keep that answer up to 15 s" in n for n in verdict.notes
    )
    assert (
        overall.verdict
        == "READY: effective TTL 15 s, safe now; new.example.net does not exist yet (NXDOMAIN)"
    )


def test_flip_prediction_adds_one_second_and_one_stale_period() -> None:
    """A cache with 5 s left flips at +6 s; a stale-serving one a 30 s period later."""
    assert predict_flip(NOW, 5) == NOW + timedelta(seconds=6)
    assert predict_flip(NOW, 5, stale_period_s=30) == NOW + timedelta(seconds=36)


def test_old_answer_coming_back_with_a_fresh_ttl_is_stale_serving() -> None:
    """TTL 2 then 30 again with the old address, after the authoritatives switched: serve-stale."""
    memory = _Memory()
    kw = {"expected": ("192.0.2.99",), "memory": memory, "auth_ttl": 8, "auth_flipped": True}
    judge_round("r:53", RESOLVER, ("192.0.2.10",), 2, now=NOW, **kw)

    state = judge_round("r:53", RESOLVER, ("192.0.2.10",), 30, now=NOW, **kw)

    assert state.label is not None
    assert "serves stale answers" in state.label
    assert state.predicted_flip == NOW + timedelta(seconds=61)


def test_refetch_before_the_switch_is_not_stale() -> None:
    """The old answer with a fresh TTL while the authoritatives still serve it is plain caching."""
    memory = _Memory()
    kw = {"expected": ("192.0.2.99",), "memory": memory, "auth_ttl": 8, "auth_flipped": False}
    judge_round("r:53", RESOLVER, ("192.0.2.10",), 1, now=NOW, **kw)

    state = judge_round("r:53", RESOLVER, ("192.0.2.10",), 8, now=NOW, **kw)

    assert state.label is None


def test_bind_key_file_as_tsig_keygen_writes_it() -> None:
    """The tsig-keygen format parses; the secret never shows in repr."""
    key = parse_key_text(
        'key "opskit-test" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0";\n};\n'
    )

    assert (key.name, key.algorithm, key.secret) == ("opskit-test", "hmac-sha256", "c2VjcmV0")
    assert "c2VjcmV0" not in repr(key)


def test_key_file_without_a_key_block_is_bad_input() -> None:
    """Garbage in a key file is a one-line usage error naming the file."""
    with pytest.raises(BadKey, match=r"lab\.key: no key"):
        parse_key_text("hello", "lab.key")


def test_nameserver_pins_and_ports() -> None:
    """NAME=ADDR:PORT pins a name; HOST:PORT and [V6]:PORT are asked directly."""
    choice = parse_nameservers(
        ["ns1.example.test=127.0.0.2:53531", "127.0.0.3:53531", "[::1]:5353"], 53
    )

    assert choice.pins["ns1.example.test."] == (Server("127.0.0.2", 53531),)
    assert choice.servers == (Server("127.0.0.3", 53531), Server("::1", 5353))
    assert str(choice.servers[1]) == "[::1]:5353"


def test_bad_port_names_the_option() -> None:
    """A port out of range is a usage error naming --nameserver."""
    with pytest.raises(BadServer, match="--nameserver"):
        parse_nameservers(["127.0.0.1:0"], 53)


def test_plan_for_a_switch_given_in_another_zone_is_shown_in_utc() -> None:
    """--switch-at 04:00+02:00 is 02:00 UTC: the timeline, labelled UTC, says 01:00 and 02:00."""
    local = timezone(timedelta(hours=2))
    switch = datetime(2026, 11, 24, 4, 0, tzinfo=local)

    plan = make_plan(
        name="d.", rtype="A", current_ttl=3600, target_ttl=300, switch_at=switch, now=NOW
    )

    assert [f"{s.at:%H:%M:%S}" for s in plan.steps if s.at is not None] == [
        "01:00:00",
        "02:00:00",
        "02:00:00",
        "02:05:01",
    ]


def test_lowering_time_without_a_zone_is_utc() -> None:
    """A hand-written lowered_at without a zone is read as UTC instead of crashing the verdict."""
    lowering = Lowering(datetime(2026, 11, 23, 0, 0), 3600, "dispatch.example.net.", "A")

    verdict = judge_record(_record(300), policy=Policy(), lowering=lowering, now=NOW)

    assert verdict.ready
    assert verdict.safe_after == NOW.replace(hour=1, minute=0)
