"""A lowering recorded for the CNAME target gates a check of the name that points at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.servers.dns_zone_lab import Auth, ZoneLab, zone, zone_lab

pytestmark = pytest.mark.dns

PRIMARY = "127.0.0.36"


@pytest.fixture
def lab() -> Iterator[ZoneLab]:
    """One knot primary: www.chain.test CNAME lb.chain.test (TTL 30), lb A at TTL 3600."""
    records = f"ns1 3600 IN A {PRIMARY}\nwww 30 IN CNAME lb.chain.test.\nlb 3600 IN A 192.0.2.70"
    with zone_lab(
        [Auth(PRIMARY, {"chain.test": zone("chain.test", records)}, kind="knot")]
    ) as running:
        yield running


def test_a_lowered_cname_target_keeps_the_name_not_ready(opskit: Invoke, lab: ZoneLab) -> None:
    """After `dns update` lowered lb from 3600 to 60 s just now, `dns check www` (a CNAME to lb) says
    NOT READY until the old TTL has passed, as `dns check lb` does, never READY."""
    opskit(
        "dns", "update", "--server", lab.at(PRIMARY), "--zone", "chain.test",
        "--name", "lb.chain.test", "--set", "192.0.2.70", "--ttl", "60",
        "--tsig-key-file", str(lab.key_file),
        expect=ExitCode.OK,
    )  # fmt: skip
    pins = ["--type", "A", "--auth-port", str(lab.port),
            "--nameserver", f"ns1.chain.test={lab.at(PRIMARY)}"]  # fmt: skip

    target = opskit("dns", "check", "lb.chain.test", *pins, expect=ExitCode.NEGATIVE)
    assert "was lowered from 3600 s" in target.stdout
    alias = opskit("dns", "check", "www.chain.test", *pins, expect=ExitCode.NEGATIVE)
    assert "was lowered from 3600 s" in alias.stdout
