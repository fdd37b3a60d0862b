"""Fixtures every test may use: `opskit` runs the CLI in-process and checks the exit code it expects."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from opskit.cli import main
from tests.servers.sshd import sshd  # noqa: F401 - the private OpenSSH fixture, for any test

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CliResult:
    """What one opskit command printed and how it exited."""

    exit_code: int
    stdout: str
    stderr: str


Invoke = Callable[..., CliResult]


def _invoke(
    *args: str,
    expect: int,
    input: str | None = None,  # noqa: A002 - the name click uses
    env: Mapping[str, str] | None = None,
) -> CliResult:
    runner = CliRunner()
    with runner.isolation(input=input, env=dict(env or {})) as streams:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = streams[0].getvalue().decode(errors="replace")
        err = streams[1].getvalue().decode(errors="replace")
    result = CliResult(code, out, err)
    assert code == expect, (
        f"opskit {' '.join(args)} exited {code}, expected {expect}\n--- stdout\n{out}\n--- stderr\n{err}"
    )
    return result


@pytest.fixture
def opskit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Run `opskit ARGS` in-process with a private state dir; every call states the exit code it expects."""
    monkeypatch.setenv("OPSKIT_STATE_DIR", str(tmp_path / "state"))
    return _invoke


@pytest.fixture
def opskit_proc(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `python -m opskit ARGS` as a real process (for kill -9, signals, live output)."""
    procs: list[subprocess.Popen[str]] = []

    def start(
        *args: str, env: Mapping[str, str] | None = None, **kw: object
    ) -> subprocess.Popen[str]:
        full_env = {**os.environ, "OPSKIT_STATE_DIR": str(tmp_path / "state"), **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "opskit", *args],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=str(kw.pop("cwd", REPO)),
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
