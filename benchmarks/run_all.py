"""Run every side-by-side benchmark in turn (`make bench`); each prints its own ratios against its peer.

The proxy benchmark takes several minutes (wrk rounds); the others take seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_runbook.py", "bench_dns.py", "bench_ssh.py", "bench_fleet.py", "bench_proxy.py"]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"\n=== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
