"""`opskit dns check` against nsd + knot + unbound on loopback: the TTL gate an operator signs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from opskit.dns.query import QueryOptions, ask, make_query
from opskit.dns.servers import Server
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.servers.dns_lab import NS1, DnsLab

pytestmark = pytest.mark.dns


def _json(out: str) -> dict:
    return json.loads(out)


def test_high_ttl_is_not_ready_with_the_safe_time(opskit: Invoke, lab: DnsLab) -> None:
    """A 24 h TTL exits 1 with the fix and a safe time 86400 s from now."""
    before = datetime.now(UTC)
    result = opskit(
        "dns",
        "check",
        "legacy.example.test",
        "--type",
        "A",
        *lab.pins,
        "--json",
        expect=ExitCode.NEGATIVE,
    )
    after = datetime.now(UTC)

    report = _json(result.stdout)
    assert set(report) == {"ready", "records", "safe_after"}
    assert report["ready"] is False
    safe = datetime.fromisoformat(report["safe_after"])
    assert before + timedelta(seconds=86400) <= safe <= after + timedelta(seconds=86400)
    record = report["records"][0]
    assert set(record) == {
        "name",
        "type",
        "ttl",
        "answers",
        "chain",
        "nameservers",
        "resolvers",
        "problems",
    }
    assert record["ttl"] == 86400
    assert "lower the TTL of legacy.example.test A from 86400 to 300 now" in record["problems"][0]
    assert {ns["server"] for ns in record["nameservers"]} == {lab.ns1, lab.ns2}
    assert set(record["nameservers"][0]) == {"server", "answers", "ttl", "serial", "error"}


def test_high_ttl_human_output_names_the_fix(opskit: Invoke, lab: DnsLab) -> None:
    """The human view ends with one NOT READY line and shows each nameserver."""
    result = opskit(
        "dns", "check", "legacy.example.test", "--type", "A", *lab.pins, expect=ExitCode.NEGATIVE
    )

    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .startswith("NOT READY: legacy.example.test A; safe from")
    )
    assert lab.ns1 in result.stdout
    assert lab.ns2 in result.stdout
    assert result.stderr == ""


def test_low_ttl_lowered_long_ago_is_ready(opskit: Invoke, lab: DnsLab) -> None:
    """An 8 s TTL lowered two days ago from 86400 s is READY, safe since a day ago."""
    lowered = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    result = opskit(
        "dns",
        "check",
        "dispatch.example.test",
        *lab.pins,
        "--lowered-at",
        lowered,
        "--previous-ttl",
        "24h",
        "--json",
        expect=ExitCode.OK,
    )

    report = _json(result.stdout)
    assert report["ready"] is True
    assert [r["type"] for r in report["records"]] == ["A", "AAAA"]
    assert datetime.fromisoformat(report["safe_after"]) < datetime.now(UTC) - timedelta(hours=23)


def test_low_ttl_without_history_says_what_it_would_need(opskit: Invoke, lab: DnsLab) -> None:
    """A low TTL with no record of when it was lowered is READY only with that caveat spelled out."""
    result = opskit(
        "dns", "check", "dispatch.example.test", "--type", "A", *lab.pins, expect=ExitCode.OK
    )

    assert "TTL is 8 s now; safe only if it was lowered at least 86400 s ago" in result.stdout
    assert "READY (if the TTL was lowered long enough ago)" in result.stdout


def test_recently_lowered_ttl_is_not_ready_until_the_old_ttl_ran_out(
    opskit: Invoke, lab: DnsLab
) -> None:
    """Lowered an hour ago from 24 h: NOT READY, safe 23 h from now."""
    lowered = datetime.now(UTC) - timedelta(hours=1)
    result = opskit(
        "dns",
        "check",
        "dispatch.example.test",
        "--type",
        "A",
        *lab.pins,
        "--lowered-at",
        lowered.isoformat(),
        "--previous-ttl",
        "86400",
        "--json",
        expect=ExitCode.NEGATIVE,
    )

    report = _json(result.stdout)
    assert datetime.fromisoformat(report["safe_after"]) == lowered + timedelta(seconds=86400)
    assert "was lowered from 86400 s" in report["records"][0]["problems"][0]


def test_same_serial_different_answers_disagree(opskit: Invoke, lab: DnsLab) -> None:
    """nsd and knot serving different addresses under one serial are NOT READY, naming both servers."""
    result = opskit(
        "dns",
        "check",
        "www.split.test",
        "--type",
        "A",
        *lab.pins,
        "--json",
        expect=ExitCode.NEGATIVE,
    )

    problems = _json(result.stdout)["records"][0]["problems"]
    assert any("disagree under the same SOA serial 7" in p for p in problems)
    assert any("192.0.2.10" in p and "192.0.2.11" in p for p in problems)


def test_lagging_serial_is_named(opskit: Invoke, lab: DnsLab) -> None:
    """Equal data under two serials: the lagging server is named."""
    result = opskit(
        "dns", "check", "www.lag.test", "--type", "A", *lab.pins, "--json", expect=ExitCode.NEGATIVE
    )

    problems = _json(result.stdout)["records"][0]["problems"]
    assert any(f"{lab.ns1} has 1" in p and "newest 2" in p for p in problems)


def test_cname_chain_gates_on_its_longest_link(opskit: Invoke, lab: DnsLab) -> None:
    """www(60) -> edge(86400) -> dispatch(8): every link is reported and the gate is 86400 s."""
    result = opskit(
        "dns",
        "check",
        "www.example.test",
        "--type",
        "A",
        *lab.pins,
        "--json",
        expect=ExitCode.NEGATIVE,
    )

    record = _json(result.stdout)["records"][0]
    assert [(c["name"], c["type"], c["ttl"]) for c in record["chain"]] == [
        ("www.example.test.", "CNAME", 60),
        ("edge.example.test.", "CNAME", 86400),
        ("dispatch.example.test.", "A", 8),
    ]
    assert record["ttl"] == 86400
    assert "lower the TTL of edge.example.test CNAME from 86400" in record["problems"][0]


def test_changes_option_gates_on_the_link_that_changes(opskit: Invoke, lab: DnsLab) -> None:
    """--changes dispatch.example.test gates on that link's 8 s, not the chain's 86400 s."""
    result = opskit(
        "dns",
        "check",
        "www.example.test",
        "--type",
        "A",
        *lab.pins,
        "--changes",
        "dispatch.example.test",
        "--json",
        expect=ExitCode.OK,
    )

    assert _json(result.stdout)["records"][0]["ttl"] == 8


def test_chain_leaving_the_zone_is_followed(opskit: Invoke, lab: DnsLab) -> None:
    """ext.example.test -> www.other.test is followed into other.test with its own TTL."""
    result = opskit(
        "dns", "check", "ext.example.test", "--type", "A", *lab.pins, "--json", expect=ExitCode.OK
    )

    record = _json(result.stdout)["records"][0]
    assert [(c["name"], c["ttl"]) for c in record["chain"]] == [
        ("ext.example.test.", 300),
        ("www.other.test.", 120),
    ]
    assert record["answers"] == ["192.0.2.120"]


def test_nxdomain_reports_the_negative_ttl(opskit: Invoke, lab: DnsLab) -> None:
    """A name that does not exist yet reports min(SOA TTL, SOA MINIMUM) = 15 s."""
    result = opskit(
        "dns", "check", "new.example.test", "--type", "A", *lab.pins, "--json", expect=ExitCode.OK
    )

    record = _json(result.stdout)["records"][0]
    assert record["ttl"] == 15
    assert record["answers"] == []
    assert record["chain"][-1]["rcode"] == "NXDOMAIN"


def test_long_negative_ttl_is_not_ready(opskit: Invoke, lab: DnsLab) -> None:
    """With --max-ttl 10s, the 15 s negative TTL is the reason, with the SOA MINIMUM fix."""
    result = opskit(
        "dns",
        "check",
        "new.example.test",
        "--type",
        "A",
        "--max-ttl",
        "10s",
        *lab.pins,
        expect=ExitCode.NEGATIVE,
    )

    assert "does not exist yet (NXDOMAIN)" in result.stdout
    assert "lower the SOA MINIMUM of example.test." in result.stdout


def test_server_that_never_answers_exits_3_with_one_line(
    opskit: Invoke, silent_server: str
) -> None:
    """A silent server: exit 3, its address and 'timed out' on one line, no traceback."""
    result = opskit(
        "dns",
        "check",
        "dispatch.example.test",
        "--nameserver",
        silent_server,
        "--query-timeout",
        "0.2",
        "--retries",
        "1",
        expect=ExitCode.BLOCKED,
    )

    assert result.stderr.count("\n") == 1
    assert silent_server in result.stderr
    assert "timed out (2 tries of 0.2 s)" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_one_dead_server_among_live_ones_is_named(
    opskit: Invoke, lab: DnsLab, silent_server: str
) -> None:
    """One silent nameserver next to a live one: NOT READY, the silent one named with its reason."""
    result = opskit(
        "dns",
        "check",
        "dispatch.example.test",
        "--type",
        "A",
        "--nameserver",
        lab.ns1,
        "--nameserver",
        silent_server,
        "--query-timeout",
        "0.2",
        "--retries",
        "0",
        "--json",
        expect=ExitCode.NEGATIVE,
    )

    problems = _json(result.stdout)["records"][0]["problems"]
    assert any(silent_server in p and "timed out" in p for p in problems)


def test_truncated_udp_answer_is_retried_over_tcp(opskit: Invoke, lab: DnsLab) -> None:
    """A 1.8 KB TXT RRset (TC=1 over UDP) arrives whole over TCP from both servers."""
    result = opskit(
        "dns", "check", "big.example.test", "--type", "TXT", *lab.pins, "--json", expect=ExitCode.OK
    )

    record = _json(result.stdout)["records"][0]
    assert len(record["answers"]) == 8
    assert all(len(ns["answers"]) == 8 for ns in record["nameservers"])


def test_query_reports_the_tcp_fallback(lab: DnsLab) -> None:
    """The query layer says when it had to use TCP."""
    outcome = asyncio.run(
        ask(
            Server(NS1, lab.auth_port),
            make_query("big.example.test", "TXT"),
            options=QueryOptions(timeout_s=1.0),
        )
    )

    assert outcome.error is None
    assert outcome.used_tcp


def test_resolver_refusing_peeks_is_not_asked_with_recursion(opskit: Invoke, lab: DnsLab) -> None:
    """A resolver that refuses recursion-off peeks is never asked with recursion on: view unknown."""
    result = opskit(
        "dns",
        "check",
        "dispatch.example.test",
        "--type",
        "A",
        *lab.pins,
        "--resolver",
        lab.clamp,
        expect=ExitCode.OK,
    )

    assert f"resolver {lab.clamp}: cache view unknown (refuses cache peeks" in result.stdout
    assert f"{lab.clamp} may serve" not in result.stdout


def test_resolver_that_does_not_hold_the_record_is_not_primed(opskit: Invoke, lab: DnsLab) -> None:
    """A snoop-friendly resolver is peeked at with recursion off: "not cached", and still not cached after."""
    args = ["dns", "check", "legacy.example.test", "--type", "A", *lab.pins]
    for _ in range(2):
        result = opskit(*args, "--resolver", lab.resolver, expect=ExitCode.NEGATIVE)
        row = next(line for line in result.stdout.splitlines() if line.startswith(lab.resolver))
        assert "not cached" in row
        assert "primed" not in row


@pytest.mark.parametrize("name", ["a..example.test", "x" * 64 + ".example.test"])
def test_malformed_name_is_bad_input(opskit: Invoke, name: str) -> None:
    """A name with an empty or 64-byte label exits 2 with one line, not a traceback."""
    result = opskit("dns", "check", name, "--nameserver", "127.0.0.1:9", expect=ExitCode.BAD_INPUT)

    assert "is not a valid domain name" in result.stderr
    assert result.stderr.count("\n") == 1


def test_name_that_does_not_exist_says_so(opskit: Invoke, lab: DnsLab) -> None:
    """A typo'd name is READY within its negative TTL, and the verdict line says it does not exist."""
    result = opskit("dns", "check", "dispatsch.example.test", *lab.pins, expect=ExitCode.OK)

    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.endswith("dispatsch.example.test does not exist yet (NXDOMAIN)")
    assert "check the spelling" in result.stdout


def test_not_ready_keeps_its_safe_time_next_to_a_missing_aaaa(opskit: Invoke, lab: DnsLab) -> None:
    """legacy has A (24 h) and no AAAA: the JSON safe_after is still the A record's safe time."""
    result = opskit(
        "dns", "check", "legacy.example.test", *lab.pins, "--json", expect=ExitCode.NEGATIVE
    )

    report = _json(result.stdout)
    assert [r["type"] for r in report["records"]] == ["A", "AAAA"]
    assert report["safe_after"] is not None
    assert datetime.fromisoformat(report["safe_after"]) > datetime.now(UTC) + timedelta(hours=23)


def test_discovery_through_a_resolver_with_auth_port(opskit: Invoke, lab: DnsLab) -> None:
    """Without --nameserver, the NS set is found through the resolver and asked on --auth-port."""
    result = opskit(
        "dns",
        "check",
        "dispatch.example.test",
        "--type",
        "A",
        "--resolver",
        lab.resolver,
        "--auth-port",
        str(lab.auth_port),
        "--json",
        expect=ExitCode.OK,
    )

    servers = {ns["server"] for ns in _json(result.stdout)["records"][0]["nameservers"]}
    assert servers == {lab.ns1, lab.ns2}


def test_signed_zone_reports_signature_ttls(opskit: Invoke, lab: DnsLab) -> None:
    """In a signed zone the RRSIG and DNSKEY TTLs and the signature's end are reported."""
    result = opskit(
        "dns",
        "check",
        "www.signed.test",
        "--type",
        "A",
        "--nameserver",
        lab.ns2,
        expect=ExitCode.OK,
    )

    assert "is signed: RRSIG TTL 60 s, DNSKEY TTL" in result.stdout


def test_signature_expiring_before_the_safe_time_is_a_reason(opskit: Invoke, lab: DnsLab) -> None:
    """Knot signs for 4 h; lowered from 24 h just now, the RRSIG runs out before the switch is safe."""
    result = opskit(
        "dns",
        "check",
        "www.signed.test",
        "--type",
        "A",
        "--nameserver",
        lab.ns2,
        "--lowered-at",
        datetime.now(UTC).isoformat(),
        "--previous-ttl",
        "24h",
        expect=ExitCode.NEGATIVE,
    )

    assert "✗ the RRSIG over www.signed.test A expires at" in result.stdout
    assert "keep the zone's signer running" in result.stdout


@pytest.mark.parametrize("bad", ["127.0.0.1:notaport", "127.0.0.1:70000", "[::1"])
def test_bad_server_is_bad_input(opskit: Invoke, bad: str) -> None:
    """A malformed HOST:PORT exits 2 naming the option, before any query."""
    result = opskit(
        "dns", "check", "x.example.test", "--nameserver", bad, expect=ExitCode.BAD_INPUT
    )

    assert "--nameserver" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_lays_out_the_timeline(opskit: Invoke, lab: DnsLab) -> None:
    """For a 24 h TTL and a switch in 3 days, lower by switch-24h; last old answer at switch+301 s."""
    switch = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    result = opskit(
        "dns",
        "plan",
        "legacy.example.test",
        "--type",
        "A",
        "--switch-at",
        switch.isoformat(),
        *lab.pins,
        "--json",
        expect=ExitCode.OK,
    )

    plan = _json(result.stdout)
    assert datetime.fromisoformat(plan["lower_by"]) == switch - timedelta(days=1)
    assert datetime.fromisoformat(plan["last_old_answer"]) == switch + timedelta(seconds=301)


def test_plan_too_late_is_an_honest_no(opskit: Invoke, lab: DnsLab) -> None:
    """A switch in one hour cannot outrun a 24 h TTL: exit 1 with the earliest safe time."""
    switch = datetime.now(UTC) + timedelta(hours=1)
    result = opskit(
        "dns",
        "plan",
        "legacy.example.test",
        "--type",
        "A",
        "--switch-at",
        switch.isoformat(),
        *lab.pins,
        expect=ExitCode.NEGATIVE,
    )

    assert "too late to lower the TTL" in result.stdout


def test_plan_names_the_chain_link_to_lower(opskit: Invoke, lab: DnsLab) -> None:
    """For www -> edge(86400) -> dispatch the plan says to lower edge's CNAME, and exits 0."""
    switch = datetime.now(UTC) + timedelta(days=3)
    result = opskit(
        "dns",
        "plan",
        "www.example.test",
        "--type",
        "A",
        "--switch-at",
        switch.isoformat(),
        *lab.pins,
        expect=ExitCode.OK,
    )

    assert "lower the TTL of edge.example.test CNAME from 86400 to 300 s" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "PLAN OK"


def test_plan_with_a_low_ttl_of_unknown_age_is_ok_with_its_condition(
    opskit: Invoke, lab: DnsLab
) -> None:
    """An 8 s TTL and no record of when it was lowered: exit 0, the condition spelled out."""
    switch = datetime.now(UTC) + timedelta(hours=2)
    result = opskit(
        "dns",
        "plan",
        "dispatch.example.test",
        "--type",
        "A",
        "--switch-at",
        switch.isoformat(),
        *lab.pins,
        expect=ExitCode.OK,
    )

    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .startswith(
            "PLAN OK if the TTL of dispatch.example.test A was already 8 s at least 86400 s"
        )
    )


def test_plan_in_the_past_is_bad_input(opskit: Invoke) -> None:
    """A --switch-at before now exits 2 before any query."""
    result = opskit(
        "dns",
        "plan",
        "dispatch.example.test",
        "--switch-at",
        "2020-01-01T02:00:00Z",
        "--nameserver",
        "127.0.0.1:9",
        expect=ExitCode.BAD_INPUT,
    )

    assert "--switch-at 2020-01-01 02:00:00 UTC is in the past" in result.stderr
