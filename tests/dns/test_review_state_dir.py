"""`--state-dir` reaches the one record of DNS changes, as it reaches the runs (README: state dir)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.servers.dns_zone_lab import Auth, ZoneLab, zone, zone_lab

pytestmark = pytest.mark.dns

PRIMARY = "127.0.0.35"


@pytest.fixture
def lab() -> Iterator[ZoneLab]:
    """One knot primary serving web.dir.test at TTL 3600."""
    records = f"ns1 3600 IN A {PRIMARY}\nweb 3600 IN A 192.0.2.60"
    with zone_lab([Auth(PRIMARY, {"dir.test": zone("dir.test", records)}, kind="knot")]) as running:
        yield running


def test_a_lowering_in_a_team_state_dir_gates_dns_check(
    opskit: Invoke, lab: ZoneLab, tmp_path: Path
) -> None:
    """A TTL lowered with --state-dir (as `opskit run --state-dir` records it) keeps `dns check
    --state-dir` at NOT READY for the old TTL, instead of a READY that forgets the lowering."""
    team = tmp_path / "team"
    opskit(
        "dns", "update", "--server", lab.at(PRIMARY), "--zone", "dir.test",
        "--name", "web.dir.test", "--set", "192.0.2.60", "--ttl", "60",
        "--tsig-key-file", str(lab.key_file), "--state-dir", str(team),
        expect=ExitCode.OK,
    )  # fmt: skip
    assert (team / "dns" / "changes.jsonl").exists()

    check = opskit(
        "dns", "check", "web.dir.test", "--type", "A", "--auth-port", str(lab.port),
        "--nameserver", f"ns1.dir.test={lab.at(PRIMARY)}", "--state-dir", str(team),
        expect=ExitCode.NEGATIVE,
    )  # fmt: skip
    assert "was lowered from 3600 s" in check.stdout
