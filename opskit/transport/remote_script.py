"""How a command reaches a remote shell without its secrets in argv, and ends when opskit goes away.

Many sshd configs refuse `AcceptEnv`, and anything on the exec line is visible in `ps` on the host.
So the exec line is a fixed wrapper; the real script (exports + command) follows on stdin as one
base64 line with the byte count of the command's own stdin, then those bytes. If the line does not
arrive whole (connection lost), `read` fails and nothing runs.

sshd does not signal a command without a pty when the connection drops (issue #10: a remote step
survived opskit's kill -9 and ran twice after `resume`). So opskit keeps the channel's stdin open while
the command runs, and the wrapper watches it: EOF (opskit died, the link dropped, or opskit closed it for
a timeout or Ctrl-C) ends every descendant of the wrapper, SIGTERM then SIGKILL after 2 s. A process the
command deliberately daemonized (setsid + double fork, re-parented to init) is the one that escapes.

Before the command starts, the wrapper prints `\\x1dPID START_TICKS BOOT_ID\\n` on stdout: its own pid
and start as the host's kernel knows it ("-" where /proc is missing), so the journal names where the
step runs and `resume` can ask later whether it still does (issue #10). `SshTransport` strips the line.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping

from opskit.errors import UsageError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DECODE_FAILED_RC = 97
STOPPED_RC = 143  # 128 + SIGTERM: what the wrapper exits with after ending the command's tree

# Every descendant of $1 (the wrapper), leaving out the subshell asking and its ps/awk.
_TREE = (
    '__tree() { __e=$BASHPID; ps -e -o pid= -o ppid= 2>/dev/null | awk -v r="$1" -v e="$__e" '
    "'{p[NR]=$1;q[NR]=$2} END{t[r]=1;do{c=0;for(i=1;i<=NR;i++)"
    "if((q[i] in t)&&!(p[i] in t)&&p[i]!=e){t[p[i]]=1;c=1}}while(c);"
    "for(k in t)if(k!=r)print k}'; }; "
)
_END = (
    # The tree is listed before anything is signalled (a child killed first would orphan its own);
    # the direct child is named by pid too, in case this host's ps cannot list the tree. The grace
    # period polls the listed pids with `kill -0` (a builtin): listing the tree costs a ps each time.
    # A zombie (ended, not yet reaped by a slow init) counts as gone.
    "__live() { kill -0 $1 2>/dev/null || return 1; [ -r /proc/$1/stat ] || return 0; "
    "read -r __st < /proc/$1/stat 2>/dev/null || return 1; "
    'case "$__st" in *") Z "*) return 1;; esac; return 0; }; '
    "__end() { __v=$(__tree $$); kill -TERM $__c $__v 2>/dev/null; __i=0; "
    "while [ $__i -lt 20 ]; do __a=; for __p in $__c $__v; do "
    '__live $__p && __a=1 && break; done; [ -z "$__a" ] && break; '
    "sleep 0.1; __i=$((__i+1)); done; "
    '__v="$__v $(__tree $$)"; kill -KILL $__c $__v 2>/dev/null; }; '
)
_READER = (
    "IFS=' ' read -r __o __n || exit 96; "
    '__s=$(printf %s "$__o" | base64 -d) || '
    '{ echo "opskit: the remote shell could not decode the command (is base64 installed?)" >&2; '
    f"exit {DECODE_FAILED_RC}; }}; "
    "case \"$__n\" in ''|*[!0-9]*) __n=0;; esac; "
    "{ read -r __t </proc/$$/stat; read -r __b </proc/sys/kernel/random/boot_id; } 2>/dev/null; "
    "__t=${__t##*) }; set -- $__t; __t=${20:--}; set --; "
    'printf \'\\035%s %s %s\\n\' "$$" "$__t" "${__b:--}"; unset __t __b; '
    + _TREE
    + _END
    + "trap '__stop=1' USR1; exec 3<&0 </dev/null; "
    # The command's own stdin is read whole first (base64 keeps NUL bytes), so the watcher below
    # never steals a byte of it; it then streams to the command through a pipe.
    + 'if [ "$__n" -gt 0 ]; then __in=$(head -c "$__n" <&3 | base64); '
    'printf %s "$__in" | base64 -d | ( exec 3<&-; unset __in; eval "$__s" ) & __c=$!; '
    'else ( exec 3<&-; eval "$__s" ) & __c=$!; fi; unset __in; '
    # The watcher: EOF on the channel means opskit is gone or wants the command stopped.
    # It repeats the signal: one sent before the wrapper reached `wait` would be lost there.
    "{ while IFS= read -r __x <&3; do :; done; "
    "while kill -USR1 $$; do sleep 0.5; done; } >/dev/null 2>&1 & __w=$!; "
    "wait $__c; __rc=$?; "
    f'if [ -n "$__stop" ]; then __end; wait $__c; exit {STOPPED_RC}; fi; '
    # The command is done: stop the watcher; what the command left running on purpose stays.
    "kill -TERM $__w 2>/dev/null; exit $__rc"
)


def exec_line(token: str) -> str:
    """The remote command line: constant apart from `token`, which names the process for cancel()."""
    # The login shell has already read ~/.bashrc (exported PATH etc. are inherited); --norc spares a
    # second, sometimes slow, read of it when bash sees it was started by sshd.
    return f"exec bash --norc -c {shlex.quote(_READER)} opskit-{token}"


def stdin_header(command: str, env: Mapping[str, str] | None, stdin_bytes: int = 0) -> bytes:
    """The first stdin line: the exports and the command (base64, so any byte survives) and the
    length of the command's own stdin, which follows."""
    lines = ["unset __o __s"]
    for name, value in (env or {}).items():
        if not _NAME.fullmatch(name):
            raise UsageError(f"env name {name!r} is not a valid shell variable name")
        lines.append(f"export {name}={shlex.quote(value)}")
    lines.append(command)
    return base64.b64encode("\n".join(lines).encode()) + f" {stdin_bytes}\n".encode()


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


START_MARK = b"\x1d"


def read_start_fields(text: str) -> tuple[int | None, str | None, str | None]:
    """`PID START_TICKS BOOT_ID` from a start line (after its marker); a field not given is None."""
    fields = [*text.split(), "-", "-", "-"]
    pid = int(fields[0]) if fields[0].isdigit() else None
    ticks = fields[1] if fields[1].isdigit() else None
    boot = fields[2] if fields[2] != "-" else None
    return pid, ticks, boot
