"""proxy.start with the haproxy engine also waits for the old service to free the port (#11)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from opskit.actions import load
from opskit.actions.params import Params
from opskit.errors import ExitCode
from opskit.proxy import bridge
from tests.conftest import Invoke
from tests.dns.context import PlainContext
from tests.servers.common import free_port

pytestmark = pytest.mark.proxy


def test_haproxy_bridge_waits_for_the_port_instead_of_failing(tmp_path: Path) -> None:
    """Started while the old service still holds the port, the haproxy bridge starts once it is freed
    (within bind_timeout) rather than failing the step with "address already in use"."""
    port, backend = free_port(), socket.create_server(("127.0.0.1", 0))
    old_service = socket.create_server(("127.0.0.1", port))
    stats = tmp_path / "stats.json"
    action = load("proxy.start").from_params(
        Params({"listen": f"127.0.0.1:{port}", "to": f"127.0.0.1:{backend.getsockname()[1]}",
                "engine": "haproxy", "stats_file": str(stats), "bind_timeout": "10s"})
    )  # fmt: skip
    outcome: list[Any] = []
    ctx = PlainContext(state_dir=tmp_path)
    starter = threading.Thread(target=lambda: outcome.append(action.run(ctx)), daemon=True)  # type: ignore[attr-defined]
    starter.start()
    try:
        time.sleep(0.3)
        assert not outcome, outcome[0].summary  # still waiting for the port, not failed
        old_service.close()
        starter.join(timeout=20)
        assert outcome
        assert outcome[0].ok, outcome[0].summary
    finally:
        old_service.close()
        backend.close()
        if stats.exists():
            bridge.stop(stats_file=stats, timeout_s=5)


def test_a_port_still_taken_after_bind_timeout_blocks_the_run(
    opskit: Invoke, tmp_path: Path
) -> None:
    """When the old service never lets go of the port, the run stops as blocked (exit 3, the holder
    named), as `opskit proxy start` does, not as an honest failure of the step."""
    port = free_port()
    step = {
        "id": "bridge",
        "uses": "proxy.start",
        "with": {"listen": f"127.0.0.1:{port}", "to": "127.0.0.1:9",
                 "stats_file": str(tmp_path / "stats.json"), "bind_timeout": "0.2s"},
    }  # fmt: skip
    runbook = tmp_path / "bridge.yaml"
    runbook.write_text(json.dumps({"name": "bridge-only", "steps": [step]}))
    with socket.create_server(("127.0.0.1", port)):
        result = opskit("run", str(runbook), expect=ExitCode.BLOCKED)
    assert "still in use" in result.stdout + result.stderr
