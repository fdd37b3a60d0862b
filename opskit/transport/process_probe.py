"""Whether a step's process still runs on a host, asked through the host's transport (issue #10).

`resume` asks before it re-decides a cut-off SSH step: when opskit's machine lost power or its network,
the host may not have noticed yet, and the step's command runs on. The process is named by its pid and
its start as the host's kernel counted it (field 22 of /proc/PID/stat, ticks since the boot named by
boot_id), so a pid the host has since handed to another process is not mistaken for the step.
"""

from __future__ import annotations

import re

from opskit.errors import TransportError
from opskit.transport.base import Transport

ALIVE_RC = 0
GONE_RC = 1
PROBE_TIMEOUT_S = 10.0
_TICKS = re.compile(r"[0-9]{1,20}")
_BOOT_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")

# Exit 0: that pid runs and started at those ticks of this boot; exit 1: it is gone. Builtins only.
# Without /proc (no start time to compare) a live pid counts as the step: refusing is the safe mistake.
_PROBE = """p={pid}; t={ticks}; b={boot}
if [ "$b" != - ] && read -r n 2>/dev/null </proc/sys/kernel/random/boot_id; then
  [ "$n" = "$b" ] || exit 1
fi
if [ -d /proc/self ]; then
  read -r s 2>/dev/null </proc/$p/stat || exit 1
  s=${{s##*) }}; set -- $s
  [ "$1" = Z ] && exit 1
  [ "$t" = - ] || [ "${{20}}" = "$t" ] || exit 1
  exit 0
fi
kill -0 "$p" 2>/dev/null || exit 1
exit 0"""


def probe_script(pid: int, start_ticks: str | None, boot_id: str | None) -> str:
    """The shell script that answers by its exit code; journal values that look wrong count as unknown."""
    ticks = start_ticks if start_ticks and _TICKS.fullmatch(start_ticks) else "-"
    boot = boot_id if boot_id and _BOOT_ID.fullmatch(boot_id) else "-"
    return _PROBE.format(pid=int(pid), ticks=ticks, boot=boot)


def runs_still(
    transport: Transport, pid: int, start_ticks: str | None, boot_id: str | None
) -> bool:
    """True while `pid` runs on the transport's host and is the process that started at `start_ticks`.

    Raises TransportError (or HostKeyError) when the host cannot be asked: nobody can tell then.
    """
    if pid <= 1:  # never a step's process: a hand-edited journal must not make us ask about init
        return False
    result = transport.run(probe_script(pid, start_ticks, boot_id), timeout_s=PROBE_TIMEOUT_S)
    if result.timed_out:
        raise TransportError(transport.label, f"no answer within {PROBE_TIMEOUT_S:g}s")
    if result.rc == ALIVE_RC:
        return True
    if result.rc == GONE_RC:
        return False
    raise TransportError(
        transport.label, f"the check exited {result.rc}: {result.stderr.strip()[-200:]}"
    )
