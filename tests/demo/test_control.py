"""`opskit demo ctl` starts and stops a rehearsal service the way systemctl would on a host."""

from __future__ import annotations

from opskit.demo.control import ControlServer
from opskit.demo.loop import BackgroundLoop
from opskit.demo.services import Service
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.servers.common import free_port


def test_ctl_stops_starts_and_reports_a_service(bg_loop: BackgroundLoop, opskit: Invoke) -> None:
    """stop, status and start answer one line each and change the service for real."""
    service = Service("old", "127.0.0.11", free_port("127.0.0.11"))
    control = ControlServer({"old": service})
    bg_loop.run(service.start())
    bg_loop.run(control.start())
    try:
        port = str(control.port)
        stopped = opskit("demo", "ctl", port, "stop", "old", expect=ExitCode.OK)
        assert stopped.stdout.startswith("ok old stopped")
        assert not service.running
        opskit("demo", "ctl", port, "read-only", "old", expect=ExitCode.OK)
        started = opskit("demo", "ctl", port, "start", "old", expect=ExitCode.OK)
        assert started.stdout.startswith("ok old running read-only")
        assert service.running
        unknown = opskit("demo", "ctl", port, "stop", "nobody", expect=ExitCode.NEGATIVE)
        assert unknown.stdout.startswith("error:")
    finally:
        bg_loop.run(control.stop())
        bg_loop.run(service.stop())


def test_ctl_without_a_demo_running_is_blocked(opskit: Invoke) -> None:
    """A control port where nothing listens exits 3 with one line, not a traceback."""
    result = opskit("demo", "ctl", str(free_port()), "status", "old", expect=ExitCode.BLOCKED)

    assert result.stderr.startswith("opskit: demo control on 127.0.0.1:")
    assert "Traceback" not in result.stderr
