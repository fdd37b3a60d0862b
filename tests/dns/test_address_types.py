"""A and AAAA: the types that exist at a name are checked; a forgotten AAAA is said plainly (#12.5)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opskit.actions import load
from opskit.actions.params import Params
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.dns.context import PlainContext
from tests.servers.dns_case import CaseLab, TsigSpec, case_lab, zone_text

pytestmark = pytest.mark.dns

# SOA MINIMUM 3600: a missing AAAA is cached as "no such record" for an hour, above a 10 min limit
BODY = """
v4     8 IN A    192.0.2.4
dual   8 IN A    192.0.2.50
dual   8 IN AAAA 2001:db8::201
"""
LOWERED = (datetime.now(UTC) - timedelta(days=2)).isoformat()


@pytest.fixture(scope="module")
def families() -> Iterator[CaseLab]:
    """nsd serving types.test: an IPv4-only name and a dual-stack one, negative TTL one hour."""
    with case_lab(nsd={"types.test": zone_text("types.test", BODY, minimum=3600)}) as running:
        yield running


def _lowered() -> tuple[str, ...]:
    return ("--lowered-at", LOWERED, "--previous-ttl", "8s")


@pytest.mark.parametrize("types", [(), ("--type", "A", "--type", "AAAA")])
def test_missing_aaaa_on_an_ipv4_only_name_is_a_note(
    opskit: Invoke, families: CaseLab, types: tuple[str, ...]
) -> None:
    """An IPv4-only name is READY with A and AAAA asked; the missing AAAA is a note, not a blocker."""
    result = opskit(
        "dns",
        "check",
        "v4.types.test",
        *types,
        "--max-ttl",
        "10m",
        "--nameserver",
        families.nsd,
        *_lowered(),
        expect=ExitCode.OK,
    )

    assert "no AAAA at v4.types.test (IPv4 only)" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("READY")


def test_runbook_gate_with_a_and_aaaa_passes_an_ipv4_only_name(
    families: CaseLab, tmp_path: Path
) -> None:
    """The shipped gate (`types: [A, AAAA]`) passes on an IPv4-only name."""
    action = load("dns.check").from_params(
        Params(
            {
                "name": "v4.types.test",
                "types": ["A", "AAAA"],
                "max_ttl": "10m",
                "nameservers": [families.nsd],
                "lowered_at": LOWERED,
                "previous_ttl": "8s",
            }
        )
    )

    result = action.run(PlainContext(state_dir=tmp_path))

    assert result.ok, result.summary + "\n" + result.detail


def test_a_missing_type_asked_alone_is_still_gated(opskit: Invoke, families: CaseLab) -> None:
    """Asking for AAAA alone on an IPv4-only name gates on its negative TTL (creating it is the switch)."""
    result = opskit(
        "dns",
        "check",
        "v4.types.test",
        "--type",
        "AAAA",
        "--max-ttl",
        "10m",
        "--nameserver",
        families.nsd,
        expect=ExitCode.NEGATIVE,
    )

    assert "resolvers cache that for 3600 s" in result.stdout


def test_wait_says_an_aaaa_still_points_at_the_old_host(opskit: Invoke, families: CaseLab) -> None:
    """Waiting for the new A while an AAAA points elsewhere says so plainly, and names AAAA."""
    result = opskit(
        "dns",
        "wait",
        "dual.types.test",
        "--expect",
        "192.0.2.50",
        "--nameserver",
        families.nsd,
        "--timeout",
        "1s",
        expect=ExitCode.OK,
    )

    assert (
        "AAAA 2001:db8::201 is still published: IPv6 clients keep reaching the old host"
        in result.stdout
    )


def test_wait_names_the_types_it_did_not_see_flip(opskit: Invoke, families: CaseLab) -> None:
    """A wait for a new A and AAAA that only the A reached times out naming AAAA."""
    result = opskit(
        "dns",
        "wait",
        "dual.types.test",
        "--expect",
        "192.0.2.50",
        "--expect",
        "2001:db8::50",
        "--nameserver",
        families.nsd,
        "--timeout",
        "1s",
        "--interval",
        "0.5s",
        expect=ExitCode.NEGATIVE,
    )

    assert "did not flip: AAAA" in result.stdout
    assert "did not flip: A," not in result.stdout


def test_update_of_a_says_the_aaaa_still_points_at_the_old_host(
    opskit: Invoke, tmp_path: Path
) -> None:
    """`dns update` moving the A of a dual-stack name says the AAAA still points at the old host."""
    secret = base64.b64encode(b"opskit-lab-only-family-key").decode()
    key = tmp_path / "family.key"
    key.write_text(f'key "fam" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
    with case_lab(
        knot={"types.test": zone_text("types.test", BODY)},
        keys=[TsigSpec("fam", "hmac-sha256", secret)],
    ) as lab:
        result = opskit(
            "dns",
            "update",
            "--server",
            lab.knot,
            "--zone",
            "types.test",
            "--name",
            "dual.types.test",
            "--set",
            "192.0.2.51",
            "--tsig-key-file",
            str(key),
            expect=ExitCode.OK,
        )

    assert (
        "AAAA 2001:db8::201 is still published: IPv6 clients keep reaching the old host"
        in result.stdout
    )
