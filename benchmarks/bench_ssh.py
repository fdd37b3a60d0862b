"""N remote commands: opskit's SshTransport (one reused connection) vs the `ssh` client per command.

Starts the private test sshd on 127.0.0.1, runs N trivial commands (`true`) both ways, and prints the
per-command time and the ratio. The remote login shell's startup (~/.bashrc) is paid by both sides.

    .venv/bin/python benchmarks/bench_ssh.py --commands 20
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opskit.transport.ssh import SshTransport
from tests.servers.sshd import start_sshd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=20)
    args = parser.parse_args()
    n = args.commands
    with tempfile.TemporaryDirectory() as tmp, start_sshd(Path(tmp) / "sshd") as server:
        started = time.perf_counter()
        transport = SshTransport(server.spec())
        per_run = []
        for _ in range(n):
            t0 = time.perf_counter()
            if not transport.run("true").ok:
                raise SystemExit("the remote command failed")
            per_run.append(time.perf_counter() - t0)
        transport.close()
        opskit_total = time.perf_counter() - started

        ssh = [
            "ssh", "-i", str(server.client_key), "-p", str(server.port),
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={server.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", f"{server.user}@{server.host}",
        ]  # fmt: skip
        started = time.perf_counter()
        for _ in range(n):
            subprocess.run([*ssh, "true"], check=True, capture_output=True, timeout=30)
        ssh_total = time.perf_counter() - started

        print(f"{n} commands, each `true` on 127.0.0.1 over SSH")
        print(f"opskit SshTransport: {opskit_total:.2f} s total, {opskit_total / n * 1000:.0f} ms/command "
              f"(median run {statistics.median(per_run) * 1000:.0f} ms, connect included once)")  # fmt: skip
        print(
            f"ssh client per command: {ssh_total:.2f} s total, {ssh_total / n * 1000:.0f} ms/command"
        )
        print(f"ratio (ssh / opskit): {ssh_total / opskit_total:.1f}x")


if __name__ == "__main__":
    main()
