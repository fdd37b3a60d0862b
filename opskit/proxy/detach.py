"""Run an in-opskit engine (HAProxy, HTTP) as a detached process that outlives the terminal.

The child is `python -m opskit.proxy.<engine> CONFIG_JSON` in its own session; it is ready once its
stats file says it runs under its own pid.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from opskit.errors import Blocked, Negative, OpskitError
from opskit.proxy.config import BridgeConfig

READY_TIMEOUT_S = 20.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A Popen preexec_fn: the child gets `sig` when this process dies, even by kill -9.

    PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so start it from a thread
    that lives as long as the engine (the main thread). libc is loaded here, before the fork.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def config_to_json(config: BridgeConfig) -> str:
    """The config as JSON (paths as text), for the detached child's command line."""
    return json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    )


def config_from_json(text: str) -> BridgeConfig:
    """The inverse of config_to_json."""
    raw = json.loads(text)
    for key in ("stats_file", "pid_file", "log_file"):
        if raw.get(key) is not None:
            raw[key] = Path(raw[key])
    return BridgeConfig(**raw)


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a detached bridge's log on one line, or "no log"."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "no log"


def popen_detached(
    argv: list[str], config: BridgeConfig, *, pass_fds: tuple[int, ...] = ()
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `argv` in its own session, output appended to the log file (0600); (process, log file)."""
    log_file = config.log_file or config.stats_file.with_suffix(".log")
    for directory in {config.stats_file.parent, log_file.parent}:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,  # Ctrl-C in this terminal must not reach the bridge
            close_fds=True,
            pass_fds=pass_fds,  # a listening socket handed over (see spawn_builtin)
        )
    finally:
        os.close(fd)
    return proc, log_file


def spawn_module(
    module: str,
    config: BridgeConfig,
    *,
    python: str = sys.executable,
    listen_sock: socket.socket | None = None,
) -> int:
    """Start `python -m MODULE CONFIG_JSON` detached; its pid once its stats file says it runs.

    `listen_sock`: a socket already listening on config.listen, inherited as config.listen_fd."""
    fds: tuple[int, ...] = ()
    if listen_sock is not None:
        fds = (listen_sock.fileno(),)
        config = dataclasses.replace(config, listen_fd=fds[0])
    argv = [python, "-m", module, config_to_json(config)]
    proc, log_file = popen_detached(argv, config, pass_fds=fds)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            # Blocked, as for the built-in engine: it could not start (port in use, no permission).
            raise Blocked(f"bridge on {config.listen} did not start: {log_tail(log_file)}")
        try:
            data = json.loads(config.stats_file.read_text(encoding="utf-8"))
            if data.get("pid") == proc.pid and data.get("state") == "running":
                return proc.pid
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.terminate()
    raise Negative(f"bridge on {config.listen} did not report running within {READY_TIMEOUT_S:g}s")


def child_main(argv: list[str], run: object) -> int:
    """The body of `python -m opskit.proxy.<engine> CONFIG_JSON`: run, report errors as one line."""
    if len(argv) != 1:
        print("usage: python -m opskit.proxy.<engine> CONFIG_JSON", file=sys.stderr)  # noqa: T201
        return 2
    try:
        stats = run(config_from_json(argv[0]))  # type: ignore[operator]
    except OpskitError as exc:
        print(f"opskit: {exc}", file=sys.stderr)  # noqa: T201 - the detached process's log
        return int(exc.exit_code)
    return 0 if getattr(stats, "ended", None) in ("sigterm", "sigint") else 1
