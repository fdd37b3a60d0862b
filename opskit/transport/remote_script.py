"""How a command and its secrets reach a remote shell without ever appearing in its argv.

Many sshd configs refuse `AcceptEnv`, and anything on the exec line is visible in `ps` on the host.
So the exec line is a fixed reader; the real script (exports + command) follows on stdin as one
base64 line, read byte by byte by the shell so the rest of stdin is left for the command itself.
If the line does not arrive whole (connection lost), `read` fails and nothing runs.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping

from opskit.errors import UsageError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DECODE_FAILED_RC = 97

_READER = (
    "IFS= read -r __o || exit 96; "
    '__s=$(printf %s "$__o" | base64 -d) || '
    '{ echo "opskit: the remote shell could not decode the command (is base64 installed?)" >&2; '
    f"exit {DECODE_FAILED_RC}; }}; "
    'eval "$__s"'
)


def exec_line(token: str) -> str:
    """The remote command line: constant apart from `token`, which names the process for cancel()."""
    # The login shell has already read ~/.bashrc (exported PATH etc. are inherited); --norc spares a
    # second, sometimes slow, read of it when bash sees it was started by sshd.
    return f"exec bash --norc -c {shlex.quote(_READER)} opskit-{token}"


def stdin_header(command: str, env: Mapping[str, str] | None) -> bytes:
    """The first stdin line: the exports and the command, base64 so any byte survives."""
    lines = ["unset __o __s"]
    for name, value in (env or {}).items():
        if not _NAME.fullmatch(name):
            raise UsageError(f"env name {name!r} is not a valid shell variable name")
        lines.append(f"export {name}={shlex.quote(value)}")
    lines.append(command)
    return base64.b64encode("\n".join(lines).encode()) + b"\n"


def cancel_line(token: str) -> str:
    """A command that stops the process group of the run named `token`: TERM, then KILL after 2 s.

    sshd starts every no-pty session in its own session (setsid), so that group is exactly the
    command and its children. The bracket keeps pgrep from matching this very command.
    """
    pattern = f"opskit-{token[:-1]}[{token[-1]}]"
    return (
        f"p=$(pgrep -o -f {shlex.quote(pattern)}) || exit 0; "
        "g=$(ps -o pgid= -p \"$p\" | tr -d ' '); "
        '[ -n "$g" ] && [ "$g" -gt 1 ] || exit 0; '
        'kill -TERM -- "-$g" 2>/dev/null; '
        'for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- "-$g" 2>/dev/null || exit 0; sleep 0.2; done; '
        'kill -KILL -- "-$g" 2>/dev/null; exit 0'
    )
