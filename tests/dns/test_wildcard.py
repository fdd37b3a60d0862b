"""Answers synthesized from a wildcard: the fix names the `*.` owner; an undo deletes (issue #12.6)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from opskit.actions import load
from opskit.actions.params import Params
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.dns.context import PlainContext
from tests.servers.dns_case import CaseLab, TsigSpec, case_lab, zone_text

pytestmark = pytest.mark.dns

SECRET = base64.b64encode(b"opskit-lab-only-wildcard-key").decode()
BODY = """
*          86400 IN A 192.0.2.77
explicit   86400 IN A 192.0.2.77
"""


@pytest.fixture
def wild() -> Iterator[CaseLab]:
    """knot serving wild.test (a wildcard A and one explicit name with the same data), TSIG updates on."""
    with case_lab(
        knot={"wild.test": zone_text("wild.test", BODY)},
        keys=[TsigSpec("wild-key", "hmac-sha256", SECRET)],
    ) as running:
        yield running


def _exists(lab: CaseLab, name: str) -> bool:
    """True when NAME is a node of its own: a name below it is then NXDOMAIN (RFC 4592 2.2.1)."""
    query = dns.message.make_query(f"below.{name}", "A")
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, "127.0.0.3", port=lab.port, timeout=2)
    return response.rcode() == dns.rcode.NXDOMAIN


def test_synthesized_answer_names_the_wildcard_in_the_fix(opskit: Invoke, wild: CaseLab) -> None:
    """A name answered by `*.wild.test` is NOT READY with the fix on `*.wild.test A`."""
    result = opskit(
        "dns",
        "check",
        "app.wild.test",
        "--type",
        "A",
        "--nameserver",
        wild.knot,
        expect=ExitCode.NEGATIVE,
    )

    assert "lower the TTL of *.wild.test A from 86400 to 300 now" in result.stdout
    assert "synthesized from *.wild.test." in result.stdout


def test_explicit_record_equal_to_the_wildcard_is_its_own(opskit: Invoke, wild: CaseLab) -> None:
    """A name with its own record (same data as the wildcard) gets the fix on itself."""
    result = opskit(
        "dns",
        "check",
        "explicit.wild.test",
        "--type",
        "A",
        "--nameserver",
        wild.knot,
        expect=ExitCode.NEGATIVE,
    )

    assert "lower the TTL of explicit.wild.test A from 86400" in result.stdout
    assert "*.wild.test" not in result.stdout


def test_update_undo_on_a_wildcard_name_deletes_what_it_created(
    wild: CaseLab, tmp_path: Path
) -> None:
    """dns.update on a wildcard-covered name journals no explicit record; its undo deletes the new one."""
    key = tmp_path / "wild.key"
    key.write_text(f'key "wild-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n')
    action = load("dns.update").from_params(
        Params(
            {
                "server": wild.knot,
                "zone": "wild.test",
                "name": "app.wild.test",
                "set": ["192.0.2.88"],
                "tsig_key_file": str(key),
            }
        )
    )
    ctx = PlainContext(state_dir=tmp_path)

    done = action.run(ctx)
    created = _exists(wild, "app.wild.test")
    assert done.undo is not None
    undone = action.undo(ctx, done.undo)

    assert done.ok
    assert done.values["before"] is None
    assert done.values["synthesized_from"] == "*.wild.test."
    assert created
    assert undone is not None
    assert undone.ok
    assert not _exists(wild, "app.wild.test")
