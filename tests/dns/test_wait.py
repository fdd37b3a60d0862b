"""`opskit dns wait` and `uses: dns.wait`: a change while unbound still caches the old answer."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import dns.message
import dns.query
import pytest

from opskit.actions.dns_wait import DnsWait
from opskit.actions.params import Params
from opskit.dns.servers import Server, parse_servers
from opskit.dns.tsigkey import TsigKey
from opskit.dns.update import replace_rrset
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.dns.context import PlainContext
from tests.servers.dns_lab import KEY_NAME, KEY_SECRET, NS2, DnsLab

pytestmark = pytest.mark.dns


def _resolve_through(resolver: str, name: str) -> None:
    server = parse_servers("--resolver", [resolver])[0]
    dns.query.udp(dns.message.make_query(name, "A"), server.host, port=server.port, timeout=2)


@pytest.mark.slow
def test_wait_reports_the_stale_resolver_and_returns_once_its_ttl_ran_out(
    opskit: Invoke, lab: DnsLab
) -> None:
    """unbound holds the old address (TTL 4 s) after the switch; wait names it, then exits 0 once it flips."""
    _resolve_through(lab.resolver, "app.flip.test")  # the cache now holds 192.0.2.50 for 4 s
    key = TsigKey(KEY_NAME, "hmac-sha256", KEY_SECRET)
    replace_rrset(
        Server(NS2, lab.auth_port),
        "flip.test",
        "app.flip.test",
        "A",
        ["192.0.2.51"],
        ttl_s=4,
        key=key,
        now=datetime.now(UTC),
    )
    started = time.monotonic()

    result = opskit(
        "dns",
        "wait",
        "app.flip.test",
        "--expect",
        "192.0.2.51",
        "--nameserver",
        lab.ns2,
        "--resolver",
        lab.resolver,
        "--interval",
        "0.5s",
        "--timeout",
        "20s",
        "--json",
        expect=ExitCode.OK,
    )

    elapsed = time.monotonic() - started
    final = json.loads(result.stdout)
    assert final["done"] is True
    assert final["stale"] == [lab.resolver]
    assert final["rounds"] > 1
    assert 0.5 < elapsed < 10


def test_wait_times_out_as_an_honest_no(opskit: Invoke, lab: DnsLab) -> None:
    """Expecting an address nobody serves exits 1 after the whole --timeout, naming who differs."""
    started = time.monotonic()
    result = opskit(
        "dns",
        "wait",
        "dispatch.example.test",
        "--expect",
        "192.0.2.99",
        *lab.pins,
        "--resolver",
        lab.resolver,
        "--interval",
        "0.4s",
        "--timeout",
        "1s",
        expect=ExitCode.NEGATIVE,
    )

    assert time.monotonic() - started >= 1.0
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("TIMED OUT after 1.")
    assert any(lab.ns1 in line and "not switched yet" in line for line in lines)
    assert f"  {lab.ns1} (authoritative) still returns 192.0.2.10" in lines
    assert any("make the switch (opskit dns update)" in line for line in lines)
    # the resolver returns what the authoritatives still publish: that is not a stale answer
    assert "served the old answer" not in result.stdout


@pytest.mark.slow
def test_wait_labels_a_serve_stale_resolver_and_waits_out_its_extra_period(
    opskit: Invoke, lab: DnsLab
) -> None:
    """The clamping serve-stale unbound keeps the old address 30 s, serves it once more, then flips."""
    _resolve_through(lab.clamp, "stale.flip.test")  # cached for 30 s (cache-min-ttl), published 4 s
    replace_rrset(
        Server(NS2, lab.auth_port),
        "flip.test",
        "stale.flip.test",
        "A",
        ["192.0.2.71"],
        ttl_s=4,
        key=TsigKey(KEY_NAME, "hmac-sha256", KEY_SECRET),
        now=datetime.now(UTC),
    )
    started = time.monotonic()

    result = opskit(
        "dns",
        "wait",
        "stale.flip.test",
        "--expect",
        "192.0.2.71",
        "--nameserver",
        lab.ns2,
        "--resolver",
        lab.clamp,
        "--interval",
        "1s",
        "--timeout",
        "70s",
        "--json",
        expect=ExitCode.OK,
    )

    elapsed = time.monotonic() - started
    final = json.loads(result.stdout)
    clamp = next(s for s in final["servers"] if s["server"] == lab.clamp)
    assert final["stale"] == [lab.clamp]
    assert "serves stale answers" in clamp["label"]
    assert 25 < elapsed < 60


def test_wait_with_no_server_answering_is_blocked(opskit: Invoke, silent_server: str) -> None:
    """Only a silent server to watch: exit 3 naming it."""
    result = opskit(
        "dns",
        "wait",
        "dispatch.example.test",
        "--expect",
        "192.0.2.10",
        "--nameserver",
        silent_server,
        "--query-timeout",
        "0.2",
        "--retries",
        "0",
        "--timeout",
        "0.5s",
        "--interval",
        "0.2s",
        expect=ExitCode.BLOCKED,
    )

    assert silent_server in result.stderr
    assert "Traceback" not in result.stderr


def test_rehearsed_wait_predicts_from_live_ttls_without_waiting(
    lab: DnsLab, tmp_path: Path
) -> None:
    """In a dry-run dns.wait does not wait: it predicts about one published TTL (24 h for legacy)."""
    action = DnsWait.from_params(
        Params(
            {
                "name": "legacy.example.test",
                "expect": ["192.0.2.21"],
                "nameservers": [f"ns1.example.test={lab.ns1}", f"ns2.example.test={lab.ns2}"],
            }
        )
    )
    started = time.monotonic()

    result = action.rehearse(PlainContext(state_dir=tmp_path, dry_run=True))

    assert time.monotonic() - started < 3
    assert result.predicted_wait_s is not None
    assert 86400 <= result.predicted_wait_s <= 86402
    assert result.ok


def test_action_wait_reports_progress_and_succeeds_when_already_flipped(
    lab: DnsLab, tmp_path: Path
) -> None:
    """dns.wait on a record every server already returns succeeds at once with a progress line."""
    ctx = PlainContext(state_dir=tmp_path)
    action = DnsWait.from_params(
        Params(
            {
                "name": "dispatch.example.test",
                "expect": "192.0.2.10",
                "nameservers": [lab.ns1, lab.ns2],
                "resolvers": [lab.resolver],
                "timeout": "5s",
            }
        )
    )

    result = action.run(ctx)

    assert result.ok, result.detail
    assert ctx.progress_lines
    assert ctx.progress_lines[-1].startswith("3/3 servers return 192.0.2.10")
