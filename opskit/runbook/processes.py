"""Where a step's commands run, journaled as `step_process`: resume and rollback refuse while one still runs.

One writer for the event (issue #10): the step's own command, its `check:`, the `undo:` rollback runs, and
the commands an action runs itself (proxy.start's `stop_old`, and `start_old` in its undo).
"""

from __future__ import annotations

import socket

from opskit.runbook.journal import Journal
from opskit.transport.base import RemoteStart, StartSink


def process_journaler(journal: Journal, step_id: str, kind: str | None = None) -> StartSink:
    """The `on_start` of a command run for `step_id`.

    `kind`: "undo" (run by rollback) or "check"; None is the step's own command (or its action's)."""
    which = {} if kind is None else {"kind": kind}

    def on_start(pid: int, remote: RemoteStart | None = None) -> None:
        if remote is None:
            journal.append(
                "step_process", step=step_id, host=socket.gethostname(), pid=pid, **which
            )
            return
        journal.append("step_process", step=step_id, host=remote.host, pid=pid, remote=True,
                       address=remote.address, port=remote.port, start_ticks=remote.start_ticks,
                       boot_id=remote.boot_id, **which)  # fmt: skip

    return on_start
