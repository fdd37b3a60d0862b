"""CNAME loops, chains longer than resolvers follow, and servers that disagree (issue #12, points 3-4)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from opskit.errors import ExitCode
from tests.conftest import CliResult, Invoke
from tests.servers.dns_case import CaseLab, case_lab, zone_text

pytestmark = pytest.mark.dns

LONG = 13  # more CNAMEs than unbound (11) and BIND (11) follow
LOOP_BODY = """
a    60 IN CNAME b
b    60 IN CNAME a
www  60 IN CNAME a
"""
LONG_BODY = "\n".join(
    [f"c{i} 60 IN CNAME c{i + 1}" for i in range(LONG)] + [f"c{LONG} 60 IN A 192.0.2.13"]
)
SHORT_BODY = "\n".join(["d0 60 IN CNAME d1", "d1 60 IN CNAME d2", "d2 60 IN A 192.0.2.2"])
LOWERED = (datetime.now(UTC) - timedelta(days=2)).isoformat()


@pytest.fixture(scope="module")
def chains() -> Iterator[CaseLab]:
    """nsd and knot both serve loop.test (a loop) and long.test (13 CNAMEs); dis.test differs on each."""
    loop, long = (
        zone_text("loop.test", LOOP_BODY),
        zone_text("long.test", LONG_BODY + "\n" + SHORT_BODY),
    )
    with case_lab(
        nsd={
            "loop.test": loop,
            "long.test": long,
            "dis.test": zone_text("dis.test", "app 8 IN A 192.0.2.10"),
        },
        knot={
            "loop.test": loop,
            "long.test": long,
            "dis.test": zone_text("dis.test", "app 86400 IN A 192.0.2.10"),
            "knotonly.test": zone_text("knotonly.test", "app 8 IN A 192.0.2.10"),
        },
    ) as running:
        yield running


def _servers(lab: CaseLab, *order: str) -> list[str]:
    args: list[str] = []
    for which in order:
        args += ["--nameserver", lab.nsd if which == "nsd" else lab.knot]
    return args


def _plan(opskit: Invoke, lab: CaseLab, name: str, switch_at: datetime) -> CliResult:
    """`dns plan NAME --type A` at `switch_at` against nsd then knot; it must exit 1."""
    return opskit(
        "dns", "plan", name, "--type", "A", "--switch-at", switch_at.isoformat(),
        *_servers(lab, "nsd", "knot"), expect=ExitCode.NEGATIVE,
    )  # fmt: skip


def test_cname_loop_is_not_ready_with_each_link_once(opskit: Invoke, chains: CaseLab) -> None:
    """A CNAME loop exits 1 with "CNAME loop: a -> b -> a", each link printed once."""
    result = opskit(
        "dns",
        "check",
        "www.loop.test",
        "--type",
        "A",
        *_servers(chains, "nsd", "knot"),
        "--lowered-at",
        LOWERED,
        "--previous-ttl",
        "60s",
        expect=ExitCode.NEGATIVE,
    )

    assert "CNAME loop: a.loop.test -> b.loop.test -> a.loop.test" in result.stdout
    assert result.stdout.count("CNAME loop") == 1
    assert "NOT READY" in result.stdout.splitlines()[-1]


def test_chain_longer_than_resolvers_follow_is_not_ready(opskit: Invoke, chains: CaseLab) -> None:
    """A chain of 13 CNAMEs exits 1 naming the resolvers' limit; a 2-link chain in the same zone passes."""
    args = (*_servers(chains, "nsd", "knot"), "--lowered-at", LOWERED, "--previous-ttl", "60s")
    long = opskit("dns", "check", "c0.long.test", "--type", "A", *args, expect=ExitCode.NEGATIVE)
    short = opskit("dns", "check", "d0.long.test", "--type", "A", *args, expect=ExitCode.OK)

    assert "CNAME chain of 13 links" in long.stdout
    assert "unbound and BIND follow at most 11" in long.stdout
    assert "READY" in short.stdout.splitlines()[-1]


@pytest.mark.parametrize("name", ["www.loop.test", "c0.long.test"])
def test_plan_is_never_ok_for_a_broken_chain(opskit: Invoke, chains: CaseLab, name: str) -> None:
    """`dns plan` exits 1 (PLAN NOT FEASIBLE) for a loop or an over-long chain, never PLAN OK."""
    result = _plan(opskit, chains, name, datetime.now(UTC) + timedelta(hours=1))

    assert "PLAN OK" not in result.stdout
    assert "PLAN NOT FEASIBLE" in result.stdout


@pytest.mark.parametrize("order", [("nsd", "knot"), ("knot", "nsd")])
def test_effective_ttl_is_the_largest_whatever_the_order(
    opskit: Invoke, chains: CaseLab, order: tuple[str, str]
) -> None:
    """Two servers serving 8 s and 86400 s give an effective TTL of 86400 s in either order."""
    result = opskit(
        "dns",
        "check",
        "app.dis.test",
        "--type",
        "A",
        *_servers(chains, *order),
        expect=ExitCode.NEGATIVE,
    )

    assert "effective TTL 86400 s" in result.stdout
    assert "authoritative servers disagree" in result.stdout


@pytest.mark.parametrize(
    ("name", "why"),
    [("app.dis.test", "authoritative servers disagree"), ("app.knotonly.test", "REFUSED")],
)
def test_plan_refuses_what_check_refuses(
    opskit: Invoke, chains: CaseLab, name: str, why: str
) -> None:
    """`dns plan` is PLAN NOT FEASIBLE (exit 1) for a disagreement or a refusing server, as check is."""
    servers = _servers(chains, "nsd", "knot")
    check = opskit("dns", "check", name, "--type", "A", *servers, expect=ExitCode.NEGATIVE)
    plan = _plan(opskit, chains, name, datetime.now(UTC) + timedelta(days=3))

    assert why in check.stdout
    assert why in plan.stdout
    assert "PLAN NOT FEASIBLE" in plan.stdout
