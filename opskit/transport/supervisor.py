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

_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_KILL_ROUNDS_S = 5.0  # after SIGKILL, how long to keep sweeping for late forks


def _become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


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


def _exit_like(status: int | None) -> None:
    """Exit with the command's status: its exit code, or the same signal that ended it."""
    if status is None:
        os._exit(128 + signal.SIGTERM)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    """Run argv[2:], watching the lifeline fd argv[0]; stop the tree with grace argv[1] seconds."""
    global _COMMAND_PID  # noqa: PLW0603 - one process, one command: the simplest shared state
    lifeline, grace_s, command = int(argv[0]), float(argv[1]), argv[2:]
    _become_subreaper()
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
    pid = os.fork()
    if pid == 0:  # the command: default signals, no supervisor fds
        for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for fd in (lifeline, wake_r, wake_w):
            os.close(fd)
        try:
            os.execvp(command[0], command)  # noqa: S606 - argv is opskit's `bash -c CMD`
        finally:
            os._exit(127)
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
            _exit_like(status)
    _exit_like(_end_tree(grace_s))


if __name__ == "__main__":
    main(sys.argv[1:])
