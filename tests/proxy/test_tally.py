"""The stats writer of the HAProxy and HTTP engines: contract fields, failed writes, a bounded table."""

from __future__ import annotations

import json
from pathlib import Path

from opskit.proxy.tally import Tally


def test_failed_write_is_counted_not_fatal(tmp_path: Path) -> None:
    """A stats file that cannot be written is counted with its reason; the next good write reports it."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    tally = Tally()

    _, error = tally.save(blocker / "stats.json", state="running")
    data, again = tally.save(tmp_path / "stats.json", state="running")

    assert error is not None
    assert "not-a-dir" in error
    assert again is None
    assert (data["write_errors"], data["last_write_error"]) == (1, error)
    assert json.loads((tmp_path / "stats.json").read_text())["write_errors"] == 1


def test_partial_table_is_said_with_its_reason() -> None:
    """Once log lines are lost, the file says the client rows may be incomplete, and why."""
    tally = Tally()
    assert tally.snapshot()["clients_partial"] is False

    tally.mark_partial("HAProxy dropped 3 log lines")

    data = tally.snapshot()
    assert (data["clients_partial"], data["clients_partial_reason"]) == (
        True,
        "HAProxy dropped 3 log lines",
    )


def test_table_past_its_cap_folds_idle_clients_and_keeps_active_ones() -> None:
    """Past the cap, the oldest idle clients are folded into clients_other; active ones keep their rows."""
    tally = Tally(cap=10)
    for i in range(30):
        row = tally.client(f"10.0.0.{i}", now=1000.0 + i)
        row.total, row.bytes_in = 1, 10
    tally.clients["10.0.0.0"].active = 1  # the oldest, but still connected

    data = tally.snapshot()

    addresses = {c["address"] for c in data["clients"]}
    assert len(addresses) == 10
    assert "10.0.0.0" in addresses
    assert "10.0.0.29" in addresses  # the most recent
    other = data["clients_other"]
    assert (other["clients"], other["total"], other["bytes_in"]) == (20, 20, 200)


def test_watch_history_closes_an_unclean_lifetime_at_its_last_write(tmp_path: Path) -> None:
    """A bridge that died without a clean stop watched until its file's updated_at, not until now."""
    path = tmp_path / "stats.json"
    old = Tally()
    old.begin_watch(111, "haproxy", 1000.0)
    data, _ = old.save(path, state="running")

    new = Tally()
    new.restore(path)
    new.begin_watch(222, "haproxy", 2000.0)
    new.end_watch(2010.0)
    watch = new.snapshot()["watch"]

    assert [(w["pid"], w["stopped_at"]) for w in watch] == [
        (111, data["updated_at"]),
        (222, "1970-01-01T00:33:30+00:00"),
    ]
