"""Exit codes and the errors that carry them: one meaning per code, the same in every command."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """One meaning per code, the same in every command."""

    OK = 0
    NEGATIVE = 1  # the honest "no": a step failed, not ready, timed out
    BAD_INPUT = 2  # click uses 2 for usage errors as well
    BLOCKED = 3  # a gate said no, no server answered, no stats
    INTERRUPTED = 130  # 128 + SIGINT


@dataclass(frozen=True)
class SourceLocation:
    """A place in a YAML file; renders as FILE:LINE:COL (1-based, as editors count)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class OpskitError(Exception):
    """Base of every error opskit reports to a person as one line."""

    exit_code: ExitCode = ExitCode.NEGATIVE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(OpskitError):
    """Bad flags or arguments; nothing ran."""

    exit_code = ExitCode.BAD_INPUT


class RunbookInvalid(OpskitError):
    """One problem in a runbook, located to FILE:LINE:COL."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, where: SourceLocation, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


class RunbookProblems(OpskitError):
    """Every problem found in a runbook; rendered one per line."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, problems: list[RunbookInvalid]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class Blocked(OpskitError):
    """Could not go on or decide: a gate said no, no server answered, no stats."""

    exit_code = ExitCode.BLOCKED


class Negative(OpskitError):
    """The honest no: a step failed, not ready, timed out."""

    exit_code = ExitCode.NEGATIVE


class TransportError(OpskitError):
    """A host could not be reached or authenticated; nothing ran there (safe to retry)."""

    exit_code = ExitCode.NEGATIVE

    def __init__(self, host: str, problem: str) -> None:
        super().__init__(f"{host}: {problem}")
        self.host, self.problem = host, problem


class HostKeyError(TransportError):
    """The host's SSH key is unknown or changed; never retried."""


class TransportDropped(TransportError):
    """The connection dropped while a command ran: the command may or may not have taken effect."""
