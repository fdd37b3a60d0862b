"""`dns update` and `dns.update` wait for every authoritative server to serve the change (issue #12.2).

knot (127.0.0.31) is the primary that takes the signed update; nsd (127.0.0.32) is the second server of
the NS set, a secondary the test updates by hand later (a lagging transfer) or never (a broken one).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.actions.dns_update import DnsUpdate
from opskit.actions.params import Params
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.dns.context import PlainContext
from tests.servers.dns_lab import KEY_NAME, KEY_SECRET
from tests.servers.dns_zone_lab import Auth, ZoneLab, zone, zone_lab

pytestmark = pytest.mark.dns

PRIMARY, SECONDARY = "127.0.0.31", "127.0.0.32"
NAMESERVERS = ("ns1.prop.test", "ns2.prop.test")
OLD = {"lag": "192.0.2.10", "stuck": "192.0.2.20", "action": "192.0.2.30"}


def _zone(records: dict[str, tuple[str, int]], serial: int) -> str:
    lines = [f"ns1 3600 IN A {PRIMARY}", f"ns2 3600 IN A {SECONDARY}"]
    lines += [f"{name} {ttl} IN A {addr}" for name, (addr, ttl) in records.items()]
    return zone("prop.test", "\n".join(lines), serial=serial, ns=NAMESERVERS)


def _old() -> dict[str, tuple[str, int]]:
    return {name: (addr, 3600) for name, addr in OLD.items()}


@pytest.fixture
def prop() -> Iterator[ZoneLab]:
    """The primary and its secondary, both serving the same zone with TTL 3600 records (fresh each test)."""
    with zone_lab(
        [
            Auth(PRIMARY, {"prop.test": _zone(_old(), 1)}, kind="knot"),
            Auth(SECONDARY, {"prop.test": _zone(_old(), 1)}),
        ]
    ) as lab:
        yield lab


def _catch_up_later(
    lab: ZoneLab, records: dict[str, tuple[str, int]], serial: int
) -> list[datetime]:
    """Rewrite the secondary's zone in 1.5 s (a slow transfer); the list gets the time it happened."""
    done: list[datetime] = []

    def rewrite() -> None:
        done.append(datetime.now(UTC))
        lab.rewrite(SECONDARY, "prop.test", _zone(records, serial))

    timer = threading.Timer(1.5, rewrite)
    timer.start()
    return done


def _update(lab: ZoneLab, name: str, *extra: str) -> list[str]:
    """`dns update` on the primary; the secondary is found from its NS set, on the primary's port."""
    return [
        "dns", "update", "--server", lab.at(PRIMARY), "--zone", "prop.test",
        "--name", f"{name}.prop.test", "--tsig-key-file", str(lab.key_file), *extra,
    ]  # fmt: skip


def test_the_lowering_counts_from_the_slowest_secondary(
    opskit: Invoke, prop: ZoneLab, tmp_path: Path
) -> None:
    """The secondary serves the lowered TTL 1.5 s late: exit 0, journaled at its time, not the primary's."""
    records = {**_old(), "lag": ("192.0.2.10", 60)}
    caught_up = _catch_up_later(prop, records, 2)

    result = opskit(
        *_update(prop, "lag", "--set", "192.0.2.10", "--ttl", "60", "--propagation-timeout", "20s"),
        expect=ExitCode.OK,
    )

    assert f"✓ ns2.prop.test ({prop.at(SECONDARY)}) serves 192.0.2.10 ttl 60" in result.stdout
    fact = json.loads((tmp_path / "state" / "dns" / "changes.jsonl").read_text().splitlines()[-1])
    assert datetime.fromisoformat(fact["lowered_at"]) >= caught_up[0]
    assert fact["previous_ttl"] == 3600


def test_a_secondary_that_never_serves_the_change_is_named_and_exit_1(
    opskit: Invoke, prop: ZoneLab
) -> None:
    """After --propagation-timeout the stale secondary is named with what it serves, and check agrees."""
    result = opskit(
        *_update(
            prop, "stuck", "--set", "192.0.2.20", "--ttl", "60", "--propagation-timeout", "1s"
        ),
        expect=ExitCode.NEGATIVE,
    )

    assert (
        f"✗ ns2.prop.test ({prop.at(SECONDARY)}) still serves 192.0.2.20 ttl 3600 after 1 s"
        in result.stdout
    )

    check = opskit(
        "dns", "check", "stuck.prop.test", "--type", "A", "--auth-port", str(prop.port),
        "--nameserver", f"ns1.prop.test={prop.at(PRIMARY)}",
        "--lowered-at", "2020-01-01T00:00:00Z", "--previous-ttl", "1h", "--json",
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip
    record = json.loads(check.stdout)["records"][0]
    ttls = {ns["server"]: ns["ttl"] for ns in record["nameservers"]}
    assert ttls == {prop.at(PRIMARY): 60, prop.at(SECONDARY): 3600}


def test_a_secondary_that_catches_up_later_never_makes_an_early_ready(
    opskit: Invoke, prop: ZoneLab, tmp_path: Path
) -> None:
    """The lowering stays pending after the secondary catches up, until a re-run settles it from then."""
    lower = _update(prop, "stuck", "--set", "192.0.2.20", "--ttl", "60")
    opskit(*lower, "--propagation-timeout", "1s", expect=ExitCode.NEGATIVE)
    prop.rewrite(SECONDARY, "prop.test", _zone({**_old(), "stuck": ("192.0.2.20", 60)}, 2))
    check = [
        "dns", "check", "stuck.prop.test", "--type", "A", "--auth-port", str(prop.port),
        "--nameserver", f"ns1.prop.test={prop.at(PRIMARY)}", "--json",
    ]  # fmt: skip

    # every server agrees now, but when the secondary caught up is unknown: never READY on that
    pending = json.loads(opskit(*check, expect=ExitCode.NEGATIVE).stdout)
    assert "was lowered from 3600 s" in pending["records"][0]["problems"][0]

    settled = opskit(*lower, "--propagation-timeout", "5s", expect=ExitCode.OK)
    assert "the lowering left pending at" in settled.stdout
    fact = json.loads((tmp_path / "state" / "dns" / "changes.jsonl").read_text().splitlines()[-1])
    assert (fact["previous_ttl"], "pending" in fact, "settles" in fact) == (3600, False, True)
    after = json.loads(opskit(*check, expect=ExitCode.NEGATIVE).stdout)
    safe = datetime.fromisoformat(after["safe_after"])
    assert safe >= datetime.fromisoformat(fact["lowered_at"]) + timedelta(seconds=3600)


def test_action_facts_carry_the_time_the_last_server_served_the_switch(
    prop: ZoneLab, tmp_path: Path
) -> None:
    """dns.update journals dns.switched and dns.ttl_lowered at the lagging secondary's time."""
    action = DnsUpdate.from_params(
        Params(
            {
                "server": prop.at(PRIMARY),
                "zone": "prop.test",
                "name": "action.prop.test",
                "set": ["192.0.2.31"],
                "ttl": "60s",
                "tsig_secret": KEY_SECRET,
                "tsig_name": KEY_NAME,
                "auth_port": prop.port,
                "propagation_timeout": "20s",
            }
        )
    )
    caught_up = _catch_up_later(prop, {**_old(), "action": ("192.0.2.31", 60)}, 2)

    done = action.run(PlainContext(state_dir=tmp_path))

    assert done.ok, done.summary
    assert "served by all 2 authoritative servers" in done.summary
    switched = datetime.fromisoformat(done.facts["dns.switched"]["switched_at"])
    lowered = datetime.fromisoformat(done.facts["dns.ttl_lowered"]["lowered_at"])
    assert switched >= caught_up[0]
    assert lowered == switched
