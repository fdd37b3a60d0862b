"""A plain ActionContext for calling dns.* actions without the runbook engine (no mocks: real values)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opskit.redaction import Masker


@dataclass
class PlainContext:
    """Records progress lines and logs; facts are whatever the test puts in."""

    state_dir: Path
    dry_run: bool = False
    run_id: str = "test-run"
    step_id: str = "step"
    host: str | None = None
    masker: Masker = field(default_factory=Masker)
    known_facts: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    progress_lines: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    undo_records: list[Mapping[str, Any]] = field(default_factory=list)
    fixed_now: datetime | None = None

    @property
    def run_dir(self) -> Path:
        path = self.state_dir / "runs" / self.run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def transport(self, host: str | None = None) -> Any:
        raise NotImplementedError("dns actions never need a transport")

    def now(self) -> datetime:
        return self.fixed_now or datetime.now(UTC)

    def log(self, line: str) -> None:
        self.logs.append(line)

    def progress(self, message: str, fraction: float | None = None) -> None:
        self.progress_lines.append(message)

    def secret(self, name: str) -> str:
        raise KeyError(name)

    def facts(self, key: str) -> list[Mapping[str, Any]]:
        return list(self.known_facts.get(key, []))

    def cancelled(self) -> bool:
        return False

    def process_sink(self) -> None:
        return None

    def record_undo(self, data: Mapping[str, Any]) -> None:
        self.undo_records.append(dict(data))
