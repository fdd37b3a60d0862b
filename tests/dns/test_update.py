"""`opskit dns update` and `uses: dns.update` against knot: TSIG updates, verification, journal, undo."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from opskit.actions.dns_update import DnsUpdate
from opskit.actions.params import Params
from opskit.dns.servers import Server
from opskit.dns.update import read_rrset
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.dns.context import PlainContext
from tests.servers.dns_lab import KEY_NAME, KEY_SECRET, NS1, NS2, DnsLab

pytestmark = pytest.mark.dns


def test_update_lowers_the_ttl_and_a_later_check_knows_when(
    opskit: Invoke, lab: DnsLab, tmp_path: Path
) -> None:
    """Lowering 3600 -> 60 s is verified, journaled 0600, and the next check waits for the old TTL."""
    result = opskit(
        "dns",
        "update",
        "--server",
        lab.ns2,
        "--zone",
        "upd.test",
        "--name",
        "app.upd.test",
        "--set",
        "192.0.2.40",
        "--ttl",
        "60",
        "--tsig-key-file",
        str(lab.key_file),
        expect=ExitCode.OK,
    )
    assert "VERIFIED" in result.stdout
    assert "TTL lowered from 3600 s" in result.stdout

    journal = tmp_path / "state" / "dns" / "changes.jsonl"
    fact = json.loads(journal.read_text().splitlines()[-1])
    assert fact["previous_ttl"] == 3600
    assert fact["new_ttl"] == 60
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(journal.parent).st_mode) == 0o700

    check = opskit(
        "dns",
        "check",
        "app.upd.test",
        "--type",
        "A",
        "--nameserver",
        lab.ns2,
        "--json",
        expect=ExitCode.NEGATIVE,
    )
    report = json.loads(check.stdout)
    assert "was lowered from 3600 s" in report["records"][0]["problems"][0]
    assert report["safe_after"] is not None


def test_unreadable_key_file_is_bad_input(opskit: Invoke, lab: DnsLab, tmp_path: Path) -> None:
    """A missing key file exits 2 naming the file; nothing is sent."""
    missing = tmp_path / "nope.key"
    result = opskit(
        "dns",
        "update",
        "--server",
        lab.ns2,
        "--zone",
        "upd.test",
        "--name",
        "app3.upd.test",
        "--set",
        "192.0.2.99",
        "--tsig-key-file",
        str(missing),
        expect=ExitCode.BAD_INPUT,
    )

    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert read_rrset(Server(NS2, lab.auth_port), "app3.upd.test", "A").values == ("192.0.2.43",)


def test_unsigned_update_is_refused_with_a_reason(opskit: Invoke, lab: DnsLab) -> None:
    """Without TSIG knot answers NOTAUTH: exit 1 with the hint, the record untouched."""
    result = opskit(
        "dns",
        "update",
        "--server",
        lab.ns2,
        "--zone",
        "upd.test",
        "--name",
        "app3.upd.test",
        "--set",
        "192.0.2.99",
        expect=ExitCode.NEGATIVE,
    )

    assert "NOTAUTH" in result.stderr
    assert read_rrset(Server(NS2, lab.auth_port), "app3.upd.test", "A").values == ("192.0.2.43",)


def test_action_update_and_undo_restore_the_previous_records(lab: DnsLab, tmp_path: Path) -> None:
    """dns.update with a runbook secret switches the record; its undo puts back values and TTL."""
    ctx = PlainContext(state_dir=tmp_path)
    action = DnsUpdate.from_params(
        Params(
            {
                "server": lab.ns2,
                "zone": "upd.test",
                "name": "app2.upd.test",
                "type": "A",
                "set": ["192.0.2.77", "192.0.2.78"],
                "ttl": "30s",
                "tsig_secret": KEY_SECRET,
                "tsig_name": KEY_NAME,
                "tsig_algorithm": "hmac-sha256",
            }
        )
    )
    server = Server(NS2, lab.auth_port)

    rehearsal = action.rehearse(ctx)
    assert "from 192.0.2.42 ttl 3600 to 192.0.2.77, 192.0.2.78 ttl 30" in rehearsal.summary
    assert read_rrset(server, "app2.upd.test", "A").values == ("192.0.2.42",)

    done = action.run(ctx)
    assert done.ok
    assert read_rrset(server, "app2.upd.test", "A").values == ("192.0.2.77", "192.0.2.78")
    assert done.facts["dns.ttl_lowered"]["previous_ttl"] == 3600
    switched = done.facts[
        "dns.switched"
    ]  # traffic.drained reads when caches forget the old address
    assert (switched["old_ttl"], switched["old_values"]) == (3600, ["192.0.2.42"])
    assert done.undo is not None
    assert done.undo["before"] == {"values": ["192.0.2.42"], "ttl": 3600}
    assert ctx.masker.text(f"key {KEY_SECRET}") == "key ***"

    undone = action.undo(ctx, done.undo)
    assert undone is not None
    assert undone.ok
    after = read_rrset(server, "app2.upd.test", "A")
    assert after is not None
    assert (after.values, after.ttl) == (("192.0.2.42",), 3600)


def test_dead_server_is_blocked_and_nothing_changes(opskit: Invoke, lab: DnsLab) -> None:
    """A primary that refuses connections exits 3 saying nothing was changed."""
    result = opskit(
        "dns",
        "update",
        "--server",
        "127.0.0.9:9",
        "--zone",
        "upd.test",
        "--name",
        "app3.upd.test",
        "--set",
        "192.0.2.99",
        "--tsig-key-file",
        str(lab.key_file),
        expect=ExitCode.BLOCKED,
    )

    assert "127.0.0.9:9" in result.stderr
    assert "nothing was changed" in result.stderr
    assert result.stderr.count("\n") == 1


def test_bad_value_is_bad_input_before_any_query(opskit: Invoke, lab: DnsLab) -> None:
    """--set 300.1.1.1 exits 2 naming the value, even with a dead server (nothing was asked)."""
    result = opskit(
        "dns",
        "update",
        "--server",
        "127.0.0.9:9",
        "--zone",
        "upd.test",
        "--name",
        "app3.upd.test",
        "--set",
        "300.1.1.1",
        expect=ExitCode.BAD_INPUT,
    )

    assert "--set 300.1.1.1: not valid A data" in result.stderr


def test_update_sent_to_a_server_without_updates_says_where_to_send_it(
    opskit: Invoke, lab: DnsLab
) -> None:
    """nsd answers a signed update unsigned: exit 1 pointing at the zone's primary, no traceback."""
    result = opskit(
        "dns",
        "update",
        "--server",
        lab.ns1,
        "--zone",
        "example.test",
        "--name",
        "dispatch.example.test",
        "--set",
        "192.0.2.99",
        "--tsig-key-file",
        str(lab.key_file),
        expect=ExitCode.NEGATIVE,
    )

    assert "send the update to the zone's primary" in result.stderr
    assert read_rrset(Server(NS1, lab.auth_port), "dispatch.example.test", "A").values == (
        "192.0.2.10",
    )
