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
from opskit.dns.update import TsigKey, replace_rrset
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
    """Expecting an address nobody serves exits 1 after --timeout, with the live lines per round."""
    result = opskit(
        "dns",
        "wait",
        "dispatch.example.test",
        "--expect",
        "192.0.2.99",
        *lab.pins,
        "--interval",
        "0.3s",
        "--timeout",
        "1s",
        expect=ExitCode.NEGATIVE,
    )

    assert "TIMED OUT" in result.stdout
    assert any(lab.ns1 in line and "192.0.2.10" in line for line in result.stdout.splitlines())


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
