"""The fleet of phones honours TTLs, reconnects and re-resolves, and stops by itself."""

from __future__ import annotations

import time

import pytest

from opskit.demo.authserver import AuthServer, demo_zone
from opskit.demo.fleet import Fleet, FleetConfig
from opskit.demo.loop import BackgroundLoop
from opskit.demo.services import Service
from tests.servers.common import free_port

ZONE = demo_zone(
    "night.test.",
    records={"dispatch": (1, "A", "127.0.0.11")},
    ns_address="127.0.0.1",
    negative_ttl_s=1,
)


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.slow
def test_phones_move_to_the_new_host_once_the_ttl_runs_out(bg_loop: BackgroundLoop) -> None:
    """After the switch every phone re-resolves within the TTL and is served by the new host."""
    port = free_port("127.0.0.11")
    auth = AuthServer(ZONE, origin="night.test")
    old, new = Service("old", "127.0.0.11", port), Service("new", "127.0.0.12", port)
    for piece in (auth, old, new):
        bg_loop.run(piece.start())
    config = FleetConfig(
        name="dispatch.night.test",
        dns_server=auth.host,
        dns_port=auth.port,
        service_port=port,
        clients=6,
        holders=0,
        stale=0,
        heartbeat_s=0.1,
        session_s=(0.3, 0.6),
        max_duration_s=20,
    )
    fleet = Fleet(config, old_address="127.0.0.11", new_address="127.0.0.12")
    try:
        bg_loop.run(fleet.start())
        assert _wait_for(lambda: fleet.summary().served_by.get("old") == 6, 5)

        auth.set_records("dispatch", "A", 1, ["127.0.0.12"])
        fleet.mark_switch()

        assert _wait_for(lambda: fleet.summary().all_on_new, 6)
        assert all(len({c[1] for c in r.connects}) == 2 for r in fleet.records)
        assert fleet.summary().failures == 0
    finally:
        bg_loop.run(fleet.stop())
        for piece in (auth, old, new):
            bg_loop.run(piece.stop())
    assert not fleet.running


def test_fleet_stops_by_itself_after_its_max_duration(bg_loop: BackgroundLoop) -> None:
    """A fleet that nobody stops ends on its own when max_duration_s has passed."""
    port = free_port("127.0.0.11")
    auth = AuthServer(ZONE, origin="night.test")
    old = Service("old", "127.0.0.11", port)
    bg_loop.run(auth.start())
    bg_loop.run(old.start())
    config = FleetConfig(
        name="dispatch.night.test",
        dns_server=auth.host,
        dns_port=auth.port,
        service_port=port,
        clients=3,
        heartbeat_s=0.1,
        holder_heartbeat_s=0.1,
        max_duration_s=1.0,
    )
    fleet = Fleet(config, old_address="127.0.0.11", new_address="127.0.0.12")
    try:
        bg_loop.run(fleet.start())
        assert _wait_for(lambda: not fleet.running, 4)
        assert old.stats().active == 0
    finally:
        bg_loop.run(fleet.stop())
        bg_loop.run(old.stop())
        bg_loop.run(auth.stop())
