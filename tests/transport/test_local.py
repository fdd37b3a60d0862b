"""LocalTransport: bash commands on this machine, streamed, bounded, and stoppable."""

from __future__ import annotations

import os
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from opskit.transport import connect
from opskit.transport.local import LocalTransport


def _pgrep(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return out.stdout.split()


def test_exit_code_and_output_are_returned() -> None:
    """A command's exit code, stdout and stderr come back separately."""
    result = LocalTransport().run("echo out; echo err >&2; exit 3")

    assert result.rc == 3
    assert not result.ok
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert not result.timed_out


def test_lines_stream_live_before_the_command_ends() -> None:
    """Each output line reaches the screen as it is printed, not when the command ends."""
    seen: list[tuple[float, str, str]] = []
    started = time.monotonic()

    LocalTransport().run(
        "echo first; sleep 0.6; echo second >&2",
        on_output=lambda stream, line: seen.append((time.monotonic() - started, stream, line)),
    )

    assert [(s, line) for _, s, line in seen] == [("stdout", "first"), ("stderr", "second")]
    assert seen[0][0] < 0.5 <= seen[1][0]


def test_env_and_stdin_reach_the_command() -> None:
    """Step env vars and stdin are visible to the command, and the command line stays clean."""
    result = LocalTransport().run(
        'printf "%s|" "$DB_PW"; cat', env={"DB_PW": "s3cret"}, stdin="from stdin"
    )

    assert result.stdout == "s3cret|from stdin"


def test_timeout_kills_the_whole_process_group() -> None:
    """A step that runs past its timeout is stopped with every child it started."""
    marker = f"{uuid.uuid4().int % 10000 + 20000}.5"
    started = time.monotonic()

    result = LocalTransport().run(f"sleep {marker} & sleep {marker}; echo never", timeout_s=0.5)

    assert result.timed_out
    assert not result.ok
    assert time.monotonic() - started < 4
    assert "never" not in result.stdout
    time.sleep(0.1)
    assert _pgrep(f"sleep {marker}") == []


def test_a_background_daemon_does_not_hang_the_step() -> None:
    """A command that leaves a background process holding its output still finishes promptly."""
    marker = f"{uuid.uuid4().int % 10000 + 30000}.5"
    started = time.monotonic()
    try:
        result = LocalTransport().run(f"sleep {marker} & echo started", timeout_s=10)
        assert result.ok
        assert result.stdout == "started\n"
        assert time.monotonic() - started < 3
    finally:
        subprocess.run(["pkill", "-f", f"sleep {marker}"], check=False)


def test_captured_output_keeps_only_the_tail_but_streams_everything() -> None:
    """Huge output is streamed in full while the result keeps only its last bytes."""
    lines: list[str] = []

    result = LocalTransport(cap_bytes=1024).run(
        "seq 1 20000", on_output=lambda _s, line: lines.append(line)
    )

    assert len(lines) == 20000
    assert lines[-1] == "20000"
    assert len(result.stdout) <= 1024
    assert result.stdout.endswith("19999\n20000\n")


def test_put_file_copies_with_the_mode_asked(tmp_path: Path) -> None:
    """put_file writes the file with exactly the requested permissions."""
    src = tmp_path / "payload"
    dst = tmp_path / "copy"
    src.write_text("payload")

    LocalTransport().put_file(src, str(dst), mode=0o640)

    assert dst.read_text() == "payload"
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o640


def test_connect_without_a_host_is_local() -> None:
    """A step without `on:` runs locally, and reaching this machine never fails."""
    transport = connect(None)

    transport.check_reachable()
    assert transport.label == "local"
    assert transport.run("true").ok
    transport.close()


def test_ctrl_c_stops_the_command_and_its_children() -> None:
    """Ctrl-C during a local step stops the whole process group before it propagates."""
    marker = f"{uuid.uuid4().int % 10000 + 50000}.5"

    def interrupt(stream: str, line: str) -> None:
        if line == "started":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LocalTransport().run(f"sleep {marker} & echo started; wait", on_output=interrupt)

    time.sleep(0.1)
    assert _pgrep(f"sleep {marker}") == []
