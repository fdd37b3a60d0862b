"""Where commands run: `local` (subprocess) and `ssh` (paramiko), behind one `Transport` interface."""

from __future__ import annotations

from opskit.transport.base import CommandResult, HostSpec, OutputSink, Transport


def connect(spec: HostSpec | None, *, accept_new_host_keys: bool = False) -> Transport:
    """The transport for a runbook host (None: this machine); SSH connects lazily on first use."""
    if spec is None:
        from opskit.transport.local import LocalTransport

        return LocalTransport()
    # paramiko costs ~0.2 s to import: only runs that touch a remote host pay for it.
    from opskit.transport.ssh import SshTransport

    return SshTransport(spec, accept_new_host_keys=accept_new_host_keys)


__all__ = ["CommandResult", "HostSpec", "OutputSink", "Transport", "connect"]
