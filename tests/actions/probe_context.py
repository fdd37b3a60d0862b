"""A real, minimal ActionContext for probe tests: local, or one host reached through a transport."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opskit.redaction import Masker
from opskit.transport import LocalTransport, Transport


class ProbeContext:
    """The context a step gets from the engine, reduced to what probes use."""

    def __init__(self, tmp: Path, host: str | None = None, remote: Transport | None = None) -> None:
        self.run_id = "test-run"
        self.step_id = "probe"
        self.dry_run = False
        self.host = host
        self.state_dir = tmp
        self.masker = Masker()
        self.lines: list[str] = []
        self._remote = remote

    @property
    def run_dir(self) -> Path:
        return self.state_dir

    def transport(self, host: str | None = None) -> Transport:
        if (host or self.host) is None:
            return LocalTransport()
        assert self._remote is not None
        return self._remote

    def now(self) -> datetime:
        return datetime(2025, 1, 1, tzinfo=UTC)

    def log(self, line: str) -> None:
        self.lines.append(line)

    def progress(self, message: str, fraction: float | None = None) -> None:
        self.lines.append(message)

    def secret(self, name: str) -> str:
        raise KeyError(name)

    def facts(self, key: str) -> list[Mapping[str, Any]]:
        return []

    def cancelled(self) -> bool:
        return False
