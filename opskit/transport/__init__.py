"""Where commands run: `local` (subprocess) and `ssh` (paramiko), behind one `Transport` interface."""

from __future__ import annotations

import os

from opskit.transport.base import CommandResult, HostSpec, OutputSink, Transport
from opskit.transport.local import LocalTransport


def connect(spec: HostSpec | None, *, accept_new_host_keys: bool = False) -> Transport:
    """The transport for a runbook host (None: this machine); SSH connects lazily on first use."""
    if spec is None:
        return LocalTransport()
    # paramiko costs ~0.2 s to import: only runs that touch a remote host pay for it.
    from opskit.transport.ssh import SshTransport  # noqa: PLC0415 - paramiko only when SSH is used

    ssh = SshTransport(spec, accept_new_host_keys=accept_new_host_keys)
    if os.environ.get("OPSKIT_SSH_AGENT", "1") == "0":
        return ssh  # one SSH session per command, as before the agent
    from opskit.transport.agent import AgentTransport  # noqa: PLC0415 - paramiko only when SSH is used

    # One long-lived remote shell per host, fed every command of the run (opskit/transport/agent.py).
    return AgentTransport(ssh)


__all__ = ["CommandResult", "HostSpec", "LocalTransport", "OutputSink", "Transport", "connect"]
