"""Helpers every server launcher shares: free ports, binaries that must exist in CI, bounded waits."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest


def in_ci() -> bool:
    """True under CI (CI=true): a missing server binary is then a failure, never a skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str, package: str | None = None) -> str:
    """The path of a server binary; fails in CI and skips elsewhere when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path:
        return path
    message = f"{name} is not installed (apt-get install {package or name}; `make test` does this as root)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def free_port(host: str = "127.0.0.1", *, udp_too: bool = False) -> int:
    """A TCP port (and UDP when asked) that is free on `host` right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free port on {host}")


def wait_tcp(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Return once host:port accepts a TCP connection; raise after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{host}:{port} did not accept connections within {timeout_s}s"
                ) from None
            time.sleep(0.05)


def stop_all(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 5.0) -> None:
    """SIGTERM every server at once, then wait for each (bounded), killing one that does not stop."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def wait_stats(
    path: Path, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
) -> dict[str, Any]:
    """The first content of a stats file that satisfies predicate (bounded)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = json.loads(path.read_text())
            if predicate(last):
                return last
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"stats never satisfied the condition; last: {last}")
