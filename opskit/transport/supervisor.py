"""The keeper of one local step: runs its command and ends every process it started when told to or orphaned.

Started by `LocalTransport` as `python -I -S supervisor.py LIFELINE_FD GRACE_S ARGV...`, in a session of its
own (so Ctrl-C or `kill -9 -PGID` aimed at opskit never reaches it first). opskit holds the only write end
of the lifeline pipe: when opskit dies by any signal, kill -9 included, the kernel closes it and the read end
here sees EOF. opskit closes it on purpose for a timeout or Ctrl-C. Either way every descendant of this
process gets SIGTERM, then SIGKILL after GRACE_S.

The supervisor is a child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER): a descendant whose parent exits
(`nohup x &`, `setsid x &`, a double fork) is re-parented to it rather than to init, so the whole tree is
found by walking /proc while the step runs (issue #10). When the command exits by itself the supervisor exits
with its status and leaves alone whatever the command deliberately left running (the documented way to start
a daemon from a step).

Started as `python -I -S supervisor.py --zygote SOCK_FD` it is instead the long-lived supervisor of one
`LocalTransport` (a "zygote", see zygote.py): started once, it forks a keeper per command, and the keeper does
exactly what main() does for one step, without paying a Python start per step. The zygote itself ends when
its socket closes (opskit closed the transport or died); the keepers watch their own lifelines.

Standard library only, no opskit import: it starts in ~20 ms and cannot be broken by opskit's own imports.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import time

TYPE_CHECKING = False  # not typing's: importing typing costs this program a fifth of its start
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import NoReturn

_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_KILL_ROUNDS_S = 5.0  # after SIGKILL, how long to keep sweeping for late forks


def _become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_LIBC: list[ctypes.CDLL] = []


def _libc() -> ctypes.CDLL:
    # Loaded once: the zygote loads it before forking, so a keeper pays nothing for it.
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: fields start after the last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def descendants(root: int) -> set[int]:
    """Every live process below `root`, found through /proc parent links."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for name in entries:
        if name.isdigit():
            parent = _parent_of(int(name))
            if parent is not None:
                children.setdefault(parent, []).append(int(name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def session_members(session_id: int) -> list[int]:
    """The live processes of session `session_id` (a step's supervisor pid names its session)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        # fields: state, ppid, pgrp, session; a zombie has already ended.
        if len(fields) > 3 and int(fields[3]) == session_id and fields[0] != b"Z":
            found.append(int(name))
    return sorted(found)


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap() -> list[tuple[int, int]]:
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def _end_tree(grace_s: float) -> int | None:
    """SIGTERM to the whole tree, SIGKILL to what is left after `grace_s`; the command's status if reaped."""
    me = os.getpid()
    status: int | None = None
    seen = descendants(me)
    _signal_all(seen, signal.SIGTERM)
    # Where /proc is missing (not Linux) the command's process group is what we can still reach; the
    # SIGTERM reaches us too, and only sets the stop flag we already act on.
    with contextlib.suppress(OSError):
        os.killpg(os.getpgid(0), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        status = _note_status(_reap(), status)
        alive = descendants(me)
        if not alive:
            return status
        seen |= alive
        time.sleep(0.05)
    deadline = time.monotonic() + _KILL_ROUNDS_S
    while time.monotonic() < deadline:
        alive = descendants(me)
        # Processes seen earlier that were re-parented elsewhere meanwhile are still ours to stop.
        _signal_all(alive | seen, signal.SIGKILL)
        seen = set()
        status = _note_status(_reap(), status)
        if not alive:
            break
        time.sleep(0.05)
    return _note_status(_reap(), status)


_COMMAND_PID = 0


def _note_status(reaped: list[tuple[int, int]], status: int | None) -> int | None:
    for pid, st in reaped:
        if pid == _COMMAND_PID:
            return st
    return status


def _exit_like(status: int | None, report: int = -1) -> NoReturn:
    """Exit with the command's status: its exit code, or the same signal that ended it.

    A keeper also writes it on `report` as a returncode (-N: signal N), since its parent is the zygote.
    """
    if report >= 0:
        rc = 128 + signal.SIGTERM if status is None else os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            os.write(report, f"{rc}\n".encode())
    if status is None:
        os._exit(128 + signal.SIGTERM)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    """Run argv[2:], watching the lifeline fd argv[0]; stop the tree with grace argv[1] seconds.

    `--zygote SOCK_FD`: serve keepers for the commands sent on that socket instead (zygote.py).
    """
    if argv[:1] == ["--zygote"]:
        serve(int(argv[1]))
    keep(int(argv[0]), float(argv[1]), argv[2:])


def keep(
    lifeline: int, grace_s: float, command: list[str], *,
    env: dict[str, str] | None = None, report: int = -1,
) -> NoReturn:  # fmt: skip
    """Run `command` as this process's child; end its whole tree when `lifeline` closes or on a signal."""
    global _COMMAND_PID  # noqa: PLW0603 - one process, one command: the simplest shared state
    _become_subreaper()
    if _closed(lifeline):  # opskit gave up on the step before it started: never start it late
        _exit_like(None, report)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stop = False

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    for sig in _STOP_SIGNALS:
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select() via the wakeup fd
    try:
        pid = _spawn(command, env, close=(lifeline, report))
    except OSError as e:  # as a shell would: say why, exit 127
        with contextlib.suppress(OSError):
            os.write(2, f"opskit: cannot run {command[0]}: {e.strerror}\n".encode())
        _exit_like(127 << 8, report)
    _COMMAND_PID = pid
    status: int | None = None
    while not stop:
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([lifeline, wake_r], [], [], 1.0)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            if lifeline in ready and not os.read(lifeline, 512):
                stop = True  # opskit is gone, or wants the step stopped
        status = _note_status(_reap(), status)
        if status is not None:
            _exit_like(status, report)
    _exit_like(_end_tree(grace_s), report)


def _spawn(command: list[str], env: dict[str, str] | None, close: tuple[int, ...]) -> int:
    """Start the command: posix_spawn (vfork + exec, no copy of this Python process), default signals.

    SIGPIPE and SIGXFSZ too, which Python ignores and exec would pass on (subprocess restores them too).
    Our own fds are close-on-exec, except these `close`, inherited from opskit or the zygote.
    """
    return os.posix_spawnp(
        command[0], command, os.environ if env is None else env,
        file_actions=[(os.POSIX_SPAWN_CLOSE, fd) for fd in close if fd >= 0],
        setsigdef=(*_STOP_SIGNALS, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ),
    )  # fmt: skip


def _closed(fd: int) -> bool:
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready) and not os.read(fd, 512)


# The zygote: one request per command. A 4-byte big-endian length and the step's fds (lifeline read end,
# report write end, stdout, stderr, then stdin if any), followed by that many bytes of JSON
# {argv, env, cwd, grace_s}. json and socket are imported by the zygote only: a per-step supervisor
# would pay ~10 ms more to start.
_HEADER_SIZE = 4
_MAX_FDS = 5


def serve(sock_fd: int) -> NoReturn:
    """Fork a keeper for each command received on `sock_fd`; exit when opskit closes it (or dies)."""
    # Keepers report their status themselves (the report fd): the kernel may reap them for us.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _libc()
    import json  # noqa: PLC0415 - see _HEADER_SIZE
    import socket  # noqa: PLC0415 - see _HEADER_SIZE

    sock = socket.socket(fileno=sock_fd)
    while True:
        request = _receive(sock, json.loads)
        if request is None:
            os._exit(0)
        fds, spec = request
        if spec is not None and os.fork() == 0:
            try:
                _become_keeper(fds, spec)
            finally:
                os._exit(127)
        for fd in fds:
            os.close(fd)


def _receive(
    sock: socket.socket, parse: Callable[[bytes], object]
) -> tuple[list[int], dict[str, object] | None] | None:
    """The next request's fds and spec (None: the socket closed); a spec that does not parse is None."""
    import socket  # noqa: PLC0415 - see _HEADER_SIZE

    try:
        head, fds, _, _ = socket.recv_fds(sock, _HEADER_SIZE, _MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        while head and len(head) < _HEADER_SIZE:
            head += sock.recv(_HEADER_SIZE - len(head))
        if len(head) < _HEADER_SIZE:
            return None
        size = int.from_bytes(head, "big")
        body = bytearray()
        while len(body) < size:
            chunk = sock.recv(min(size - len(body), 1 << 20))
            if not chunk:
                return None
            body += chunk
    except OSError:
        return None
    try:
        spec = parse(bytes(body))
    except ValueError:
        return fds, None
    return fds, spec if isinstance(spec, dict) and len(fds) >= 4 else None


def _become_keeper(fds: list[int], spec: dict[str, object]) -> NoReturn:
    """In the forked child: a session of its own, the step's stdio, then exactly main()'s job."""
    lifeline, report, stdout, stderr = fds[:4]
    os.setsid()  # the session id is this pid: what the journal records and resume looks for
    os.write(report, f"{os.getpid()}\n".encode())
    stdin = fds[4] if len(fds) > 4 else os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
    keep_open = sorted({0, 1, 2, lifeline, report})
    for low, high in zip(keep_open, [*keep_open[1:], 1 << 20], strict=True):
        os.closerange(low + 1, high)  # the zygote's socket and every other step's fds
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    argv, env, cwd, grace_s = (spec.get(k) for k in ("argv", "env", "cwd", "grace_s"))
    if isinstance(cwd, str):
        # A directory deleted since: the command runs where the zygote is, as opskit itself would.
        with contextlib.suppress(OSError):
            os.chdir(cwd)
    keep(
        lifeline, float(grace_s) if isinstance(grace_s, (int, float)) else 2.0,
        [str(a) for a in argv] if isinstance(argv, list) else [],
        env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else None,
        report=report,
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
