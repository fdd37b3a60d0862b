"""Where commands run: `local` (subprocess) and `ssh` (paramiko), behind one `Transport` interface."""

from opskit.transport.base import CommandResult, OutputSink, Transport

__all__ = ["CommandResult", "OutputSink", "Transport"]
