"""`uses: proxy.start`: start the bridge here or on the step's host, and journal how to stop it.

Locally the bridge runs detached (it outlives opskit). With `on: HOST` the single-file forwarder is
copied over SFTP and started with setsid/nohup on that host. A dry-run checks that the listen port is
free and that the new host answers from where the bridge will run; it starts nothing.

`stop_old: CMD` (shell text, run on the step's host) stops the old service once the bridge already
holds the service's own listening socket (or, where it cannot, retries its bind), so the port changes
hands with nobody refused; the undo stops the bridge, then runs `start_old: CMD`. A failed stop_old
abandons the socket and fails the step with the command's output.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params, ShellCommand
from opskit.actions.traffic_drained import (
    LOWERED_FACT,
    SWITCH_FACT,
    _when,
    check_switched_at,
    switch_from_facts,
)
from opskit.durations import format_seconds
from opskit.errors import Blocked, Negative, OpskitError
from opskit.proxy.detach import die_with_parent

MODES = ("tcp", "http")
ENGINES = ("builtin", "haproxy")
PROXY_PROTOCOLS = ("none", "v1", "v2")


@dataclass(frozen=True)
class ProxyStart(BaseAction):
    """with: listen, to, mode, engine, stats_file, max_connections, idle_timeout, connect_timeout,
    drain_timeout, proxy_protocol, nudge_after, switched_at, old_ttl, margin, python, bind_timeout,
    stop_old, start_old, stop_timeout.

    `stop_old` (a shell command, run on the step's host) stops the old service only once the bridge
    holds a duplicate of the service's own listening socket (pidfd_getfd: root, or the service's user
    where ptrace is not restricted; locally and over SSH). The socket never closes, so clients arriving
    while the service stops wait in its queue, and the ones it had not accepted are carried, not reset.
    Where the socket cannot be held (a wildcard or SO_REUSEPORT listener, no permission) the bind is
    retried every 50 us, which leaves a gap of that order (issue #11). Both TCP engines start on that
    socket (HAProxy as `bind fd@N`); mode http binds after the stop. The undo stops the bridge, then
    runs `start_old`.

    A nudge starts only once caches can have forgotten the old address: switched_at + old_ttl +
    margin (default 0: an early nudge only costs a reconnect), taken from `with:` or from the
    `dns.switched` fact journaled by dns.update. When neither says when, the bridge runs un-nudged.
    """

    kind: ClassVar[ActionKind] = ActionKind.MUTATE
    # `with:` values that are shell text, rendered like `run:` (each value one argument, each secret a
    # `$OPSKIT_SECRET_*` reference); `validate` lists their `| raw` parts.
    command_params: ClassVar[tuple[str, ...]] = ("stop_old", "start_old")
    listen: str
    to: str
    mode: str = "tcp"
    engine: str = "builtin"
    stats_file: str | None = None
    max_connections: int = 10_000
    idle_timeout_s: float | None = None
    connect_timeout_s: float = 5.0
    drain_timeout_s: float = 10.0
    proxy_protocol: str | None = None
    nudge_after_s: float | None = None
    switched_at: str | None = None
    old_ttl_s: float | None = None
    margin_s: float = 0.0
    python: str = "python3"
    # The old service may still hold the port for a moment after its stop command returns: the bridge
    # takes it the moment it is free (up to this long) instead of failing. With stop_old the bridge
    # waits from before that command, so the wait also covers stop_old's own time (`_hold_s`).
    bind_timeout_s: float = 30.0
    stop_old: ShellCommand | None = None
    start_old: ShellCommand | None = None
    stop_timeout_s: float = 300.0

    @classmethod
    def from_params(cls, params: Params) -> Self:
        from opskit.proxy.config import split_host_port  # noqa: PLC0415

        protocol = params.choice("proxy_protocol", PROXY_PROTOCOLS, "none")
        action = cls(
            listen=params.text("listen"),
            to=params.text("to"),
            mode=params.choice("mode", MODES, "tcp"),
            engine=params.choice("engine", ENGINES, "builtin"),
            stats_file=params.text("stats_file", None),
            max_connections=params.integer("max_connections", 10_000),
            idle_timeout_s=params.seconds("idle_timeout", None),
            connect_timeout_s=params.seconds("connect_timeout", 5.0),
            drain_timeout_s=params.seconds("drain_timeout", 10.0),
            proxy_protocol=None if protocol == "none" else protocol,
            nudge_after_s=params.seconds("nudge_after", None),
            switched_at=params.text("switched_at", None),
            old_ttl_s=params.seconds("old_ttl", None),
            margin_s=params.seconds("margin", 0.0),
            python=params.text("python", "python3"),
            bind_timeout_s=params.seconds("bind_timeout", 30.0),
            # empty is "none": a playbook passes its blank default on
            stop_old=params.command("stop_old", None) or None,
            start_old=params.command("start_old", None) or None,
            stop_timeout_s=params.seconds("stop_timeout", 300.0),
        )
        params.finish()
        for key in ("listen", "to"):
            value = getattr(action, key)
            if value and "{{" not in value:
                try:
                    split_host_port(value)
                except ValueError as exc:
                    raise ParamError(key, str(exc)) from None
        if action.mode == "http" and action.proxy_protocol:
            raise ParamError("proxy_protocol", "is for mode tcp (http mode adds X-Forwarded-For)")
        if action.max_connections < 1:
            raise ParamError("max_connections", "must be at least 1")
        check_switched_at(action.switched_at)
        if action.start_old and not action.stop_old:
            raise ParamError("start_old", "undoes stop_old: give stop_old too")
        return action

    @property
    def _hold_s(self) -> float:
        """How long the bridge may wait for the port from before stop_old runs: stop_old's own time
        (up to stop_timeout) plus bind_timeout, so a slow stop never leaves the port to nobody."""
        return self.bind_timeout_s + (self.stop_timeout_s if self.stop_old else 0.0)

    def describe(self) -> str:
        engine = "http (mitmproxy)" if self.mode == "http" else self.engine
        then = (
            f", stopping the old service ({self.stop_old.shown}) once it waits"
            if self.stop_old
            else ""
        )
        return f"start the bridge {self.listen} -> {self.to} ({engine}){then}"

    def nudge_not_before(self, ctx: ActionContext) -> str | None:
        """When nudging may start (switch + old TTL + margin), or None when that is not known."""
        from opskit.proxy.config import nudge_start  # noqa: PLC0415

        facts = switch_from_facts(ctx.facts(SWITCH_FACT), ctx.facts(LOWERED_FACT))
        switched_at = _when(self.switched_at) or facts[0]
        old_ttl_s = self.old_ttl_s if self.old_ttl_s is not None else facts[1]
        if switched_at is None or old_ttl_s is None:
            return None
        return nudge_start(switched_at, old_ttl_s, self.margin_s)

    def _config(self, stats_file: Path, nudge_not_before: str | None = None) -> Any:
        from opskit.proxy.config import BridgeConfig  # noqa: PLC0415

        return BridgeConfig(
            listen=self.listen,
            to=self.to,
            stats_file=stats_file,
            mode=self.mode,  # type: ignore[arg-type]  # checked by from_params
            engine=self.engine,  # type: ignore[arg-type]
            pid_file=stats_file.with_suffix(".pid"),
            max_connections=self.max_connections,
            idle_timeout_s=self.idle_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            drain_timeout_s=self.drain_timeout_s,
            proxy_protocol=self.proxy_protocol,  # type: ignore[arg-type]
            nudge_after_s=self.nudge_after_s if nudge_not_before else None,
            nudge_not_before=nudge_not_before,
            log_file=stats_file.with_suffix(".log"),
            bind_retry_s=self._hold_s,
        )

    def _local_stats_file(self, ctx: ActionContext) -> Path:
        from opskit.proxy.config import split_host_port  # noqa: PLC0415

        if self.stats_file:
            return Path(self.stats_file).expanduser()
        return ctx.run_dir / f"bridge-{split_host_port(self.listen)[1]}.json"

    def _nudge(self, ctx: ActionContext) -> str | None:
        if self.nudge_after_s is None:
            return None
        not_before = self.nudge_not_before(ctx)
        if not_before is None:
            ctx.log(
                "nudge off: unknown when caches forget the old address (journal the switch with "
                "dns.update, or give switched_at and old_ttl)"
            )
        else:
            ctx.log(
                f"idle connections are nudged after {format_seconds(self.nudge_after_s)} "
                f"from {not_before}"
            )
        return not_before

    def run(self, ctx: ActionContext) -> ActionResult:
        try:
            if ctx.host is None:
                return self._run_local(ctx)
            return self._run_remote(ctx)
        except OpskitError as exc:  # a port still taken, a bridge that did not start: exit 3
            return ActionResult(ok=False, blocked=isinstance(exc, Blocked), summary=str(exc))

    def _run_local(self, ctx: ActionContext) -> ActionResult:
        from opskit.proxy import bridge  # noqa: PLC0415
        from opskit.proxy.config import split_host_port  # noqa: PLC0415

        listen = split_host_port(self.listen)
        if self.mode == "tcp":
            # Held (the old service's own socket) or bound the moment the port is free, by a helper
            # process that already waits while stop_old runs; the kernel queues clients while the
            # bridge process starts and inherits it (HAProxy as `bind fd@N`), so nobody is refused in
            # between (issue #11: 6 of 22 were).
            with BindInBackground(listen, self._hold_s) as attempt:
                if attempt.holds_old_socket:
                    ctx.log(
                        "the bridge holds the old service's own listening socket: clients queue "
                        "in it while the service stops, none is refused"
                    )
                self._stop_old(ctx)  # on failure the attempt is abandoned, the port let go
                sock = attempt.wait()
                config = self._config(self._local_stats_file(ctx), self._nudge(ctx))
                pid = bridge.spawn(config, listen_sock=sock)
        else:
            # mitmproxy binds in its own process: wait here until the old service lets go, so
            # bind_timeout holds for it too (its start refuses a port that is still taken). The
            # gap is its start-up time.
            self._stop_old(ctx)
            wait_until_free(listen, self.bind_timeout_s)
            config = self._config(self._local_stats_file(ctx), self._nudge(ctx))
            pid = bridge.spawn(config)
        ctx.log(
            f"bridge {self.listen} -> {self.to} runs as pid {pid}; stats in {config.stats_file}"
        )
        files = {
            "stats_file": str(config.stats_file),
            "pid_file": str(config.pid_file),
            "log_file": str(config.log_file),
        }
        undo = {"host": None, "pid": pid, **files, **self._undo_start_old()}
        ctx.record_undo(undo)  # a run killed from here on still has a bridge to stop on rollback
        return ActionResult(
            ok=True,
            summary=f"bridge {self.listen} -> {self.to} started (pid {pid})",
            values={"pid": pid, "listen": self.listen, "to": self.to, **files},
            undo=undo,
        )

    def _stop_old(self, ctx: ActionContext) -> None:
        """Run `stop_old` on the step's host; Negative, with its output, when it fails."""
        if not self.stop_old:
            return
        ctx.log(f"the bridge waits for the port; stopping the old service: {self.stop_old.shown}")
        result = ctx.transport().run(
            self.stop_old,
            env=_secret_env(ctx, self.stop_old.secret_vars),
            timeout_s=self.stop_timeout_s,
            on_output=lambda _stream, line: ctx.log(line),
            on_start=ctx.process_sink(),
        )
        if not result.ok:
            how = (
                f"timed out after {format_seconds(self.stop_timeout_s)}"
                if result.timed_out
                else f"exit {result.rc}"
            )
            output = " | ".join((result.stderr.strip() or result.stdout.strip()).splitlines()[-3:])
            raise Negative(
                f"stop_old failed ({how}){': ' + output if output else ''}; "
                "the bridge was not started"
            )

    def _undo_start_old(self) -> dict[str, Any]:
        """start_old as journaled for the rollback: secrets as references, never their values (#10)."""
        if not self.start_old:
            return {}
        secrets = {"start_old_secrets": dict(self.start_old.secret_vars)}
        return {
            "start_old": str(self.start_old),
            "start_old_shown": self.start_old.shown,
            **(secrets if self.start_old.secret_vars else {}),
        }

    def _run_remote(self, ctx: ActionContext) -> ActionResult:
        from opskit.proxy import remote  # noqa: PLC0415

        if self.mode != "tcp":
            return ActionResult(
                ok=False,
                blocked=True,
                summary=(
                    f"on {ctx.host} a bridge runs in mode tcp (the forwarder or HAProxy); "
                    "http mode needs opskit and mitmproxy on that host"
                ),
            )
        # the files' places on the host come from stats_file
        config = self._config(Path("unused.json"), self._nudge(ctx))
        if self.engine == "haproxy":
            if config.nudge_after_s is not None:
                ctx.log("nudge off: HAProxy on a host is not watched by opskit between steps")
            started = remote.start_haproxy(
                ctx.transport(),
                config,
                python=self.python,
                stats_file=self.stats_file,
                once_retrying=(lambda: self._stop_old(ctx)) if self.stop_old else None,
            )
        else:
            started = remote.start(
                ctx.transport(),
                config,
                python=self.python,
                stats_file=self.stats_file,
                once_retrying=lambda: self._stop_old(ctx),
            )
        ctx.log(
            f"bridge {self.listen} -> {self.to} runs on {ctx.host} as pid {started.pid} "
            f"({self.engine})"
        )
        files = {
            "stats_file": started.stats_file,
            "pid_file": started.pid_file,
            "log_file": started.log_file,
            "engine": self.engine,
        }
        if started.haproxy_socket:
            files["haproxy_socket"] = started.haproxy_socket
        undo = {"host": ctx.host, "pid": started.pid, **files, **self._undo_start_old()}
        ctx.record_undo(undo)  # a run killed from here on still has a bridge to stop on rollback
        return ActionResult(
            ok=True,
            summary=f"bridge {self.listen} -> {self.to} started on {ctx.host} (pid {started.pid})",
            values={"pid": started.pid, "listen": self.listen, "to": self.to, **files},
            undo=undo,
        )

    def rehearse(self, ctx: ActionContext) -> ActionResult:
        from opskit.proxy.config import split_host_port  # noqa: PLC0415

        if ctx.host is not None:
            from opskit.proxy import remote  # noqa: PLC0415

            try:
                found = remote.preflight(
                    ctx.transport(), self._config(Path("unused.json")), python=self.python
                )
            except OpskitError as exc:
                return ActionResult(ok=False, blocked=True, summary=str(exc))
            problems = [p for p in found.problems if not _only_in_use(p)]
            notes = [p for p in found.problems if _only_in_use(p)]
            if self.engine == "haproxy" and remote.has_haproxy(ctx.transport()) is None:
                problems.append(f"haproxy is not installed on {ctx.host}; use engine: builtin")
        else:
            found_local = _local_preflight(split_host_port(self.listen), split_host_port(self.to))
            problems = [p for p in found_local if not _only_in_use(p)]
            notes = [p for p in found_local if _only_in_use(p)]
        if problems:
            return ActionResult(ok=False, summary="; ".join(problems))
        where = f" on {ctx.host}" if ctx.host else ""
        if notes:
            # In a rehearsal the old service still holds the port: the run stops it in an earlier step.
            return ActionResult(
                ok=True,
                summary=(
                    f"would {self.describe()}{where}: new host answers; {notes[0]} now "
                    + (
                        "(the old service): stop_old frees it when the step runs"
                        if self.stop_old
                        else "(the old service?): a step before this one must free it"
                    )
                ),
            )
        return ActionResult(
            ok=True, summary=f"would {self.describe()}{where}: port free, new host answers"
        )

    def undo(self, ctx: ActionContext, data: Mapping[str, Any]) -> ActionResult | None:
        from opskit.actions.proxy_stop import stop_bridge  # noqa: PLC0415

        stopped = stop_bridge(
            ctx,
            host=data.get("host"),
            stats_file=str(data["stats_file"]),
            pid_file=data.get("pid_file"),
            pid=data.get("pid"),
            timeout_s=self.drain_timeout_s + 5,
            haproxy_socket=data.get("haproxy_socket"),
        )
        start_old = data.get("start_old")
        if not start_old or not stopped.ok:
            return stopped  # a bridge still holding the port: the old service could not take it
        shown = data.get("start_old_shown") or start_old
        try:
            env = _secret_env(ctx, data.get("start_old_secrets") or {})
        except OpskitError as exc:  # the runbook no longer has that secret
            return ActionResult(ok=False, summary=f"{stopped.summary}; start_old not run: {exc}")
        result = ctx.transport(data.get("host")).run(
            str(start_old),
            env=env,
            timeout_s=self.stop_timeout_s,
            on_output=lambda _stream, line: ctx.log(line),
            on_start=ctx.process_sink(),
        )
        if not result.ok:
            output = " | ".join((result.stderr.strip() or result.stdout.strip()).splitlines()[-3:])
            return ActionResult(
                ok=False,
                summary=f"{stopped.summary}; start_old failed (exit {result.rc}): {output}",
            )
        return dataclasses.replace(
            stopped, summary=f"{stopped.summary}; the old service started again ({shown})"
        )

    @staticmethod
    def describe_undo(data: Mapping[str, Any]) -> str:
        """What the undo does with its journaled data, as `rollback --dry-run` shows it."""
        where = f" on {data['host']}" if data.get("host") else ""
        then = (
            f", then start the old service: {data.get('start_old_shown') or data['start_old']}"
            if data.get("start_old")
            else ""
        )
        return f"stop the bridge{where} (pid {data.get('pid')}, {data.get('stats_file')}){then}"


def _secret_env(ctx: ActionContext, secret_vars: Mapping[str, str]) -> dict[str, str]:
    """The environment a command param reads its secrets from ($OPSKIT_SECRET_* -> value)."""
    # Read back from the journal at rollback: a name like LD_PRELOAD must never be set from it.
    return {
        var: ctx.secret(str(name))
        for var, name in secret_vars.items()
        if re.fullmatch(r"OPSKIT_SECRET_[A-Z0-9_]+", str(var))
    }


def _only_in_use(problem: str) -> bool:
    """A listen address that is merely taken right now (not missing, not forbidden)."""
    return "not free" in problem and "in use" in problem


def _local_preflight(listen: tuple[str, int], target: tuple[str, int]) -> list[str]:
    """Can we listen on `listen` here, and does `target` accept a TCP connection from here?"""
    problems = []
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(listen)
        except OSError as exc:
            problems.append(f"{listen[0]}:{listen[1]} is not free here: {exc.strerror or exc}")
    try:
        socket.create_connection(target, timeout=3).close()
    except OSError as exc:
        problems.append(f"{target[0]}:{target[1]} does not answer from here: {exc.strerror or exc}")
    return problems


def wait_until_free(listen: tuple[str, int], timeout_s: float) -> None:
    """Return once nothing listens on `listen` (checked every 5 ms, up to `timeout_s`); at the
    deadline return anyway: the bridge's own start then names who holds the port."""
    from opskit.proxy.listeners import address_taken  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while address_taken(*listen) and time.monotonic() < deadline:  # bounded by timeout_s
        time.sleep(0.005)


# Runs in its own process: there no other thread holds the GIL at the moment the port frees (in
# opskit's process the thread reading stop_old's output can, for up to the 5 ms switch interval).
# First byte: "t" it holds the old service's own listening socket, "r" it retries the bind; then "b"
# with the socket, or "e" with an errno.
_BIND_CHILD = r"""
import os, socket, sys
from opskit.proxy.forwarder import listeners_when_free
host, port, timeout_s, fd = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
chan = socket.socket(fileno=fd)
said = []
def waiting(how):
    said.append(b"t" if how else b"r")
    chan.sendall(said[0])
try:
    try:
        socks = listeners_when_free(host, port, timeout_s, waiting)
    except OSError as exc:
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            raise
        chan.sendall((b"" if said else b"r") + b"e%d" % (exc.errno or 0))
        sys.exit(1)
    if not said:
        chan.sendall(b"r")
    socket.send_fds(chan, [b"b"], [socks[0].fileno()])
except (BrokenPipeError, ConnectionResetError):
    os._exit(1)  # opskit gave up on this attempt (or died): nothing to say, nobody to say it to
"""


class BindInBackground:
    """`listeners_when_free` in a helper process, so the old service can be stopped while it waits.

    Used as a context manager: entering returns once the helper retries; leaving abandons the attempt
    (the helper is ended, a socket it bound is closed), so a failed stop leaves nothing listening."""

    def __init__(self, listen: tuple[str, int], timeout_s: float) -> None:
        self._listen, self._timeout_s = listen, timeout_s
        self._sock: socket.socket | None = None
        self._chan, self._child_end = socket.socketpair()
        self._child: subprocess.Popen[bytes] | None = None
        # True: it holds the old service's own listening socket, so clients queue while it stops
        self.holds_old_socket = False

    def __enter__(self) -> Self:
        script = _BIND_CHILD
        args = (*map(str, self._listen), repr(self._timeout_s), str(self._child_end.fileno()))
        self._child = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            pass_fds=(self._child_end.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # It holds the old service's socket: it must not outlive opskit (kill -9 included), or it
            # would take the port after the service stops and then drop the clients queued in it.
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - the step's thread outlives the child
        )
        self._child_end.close()
        self._chan.settimeout(30)  # a python start-up, even on a loaded host
        try:
            first = self._chan.recv(1)
        except OSError:  # TimeoutError included: `with` does not call __exit__ when this raises
            first = b""
        if first not in (b"r", b"t"):
            self.__exit__()
            raise Blocked(f"could not start waiting for {self._where}")
        self.holds_old_socket = first == b"t"
        return self

    @property
    def _where(self) -> str:
        return f"{self._listen[0]}:{self._listen[1]}"

    def wait(self) -> socket.socket:
        """The bound, listening socket; Blocked when the port stayed taken for `timeout_s`."""
        self._chan.settimeout(self._timeout_s + 10)  # the helper itself gives up at timeout_s
        try:
            message, fds, _, _ = socket.recv_fds(self._chan, 64, 1)
        except TimeoutError:
            message, fds = b"", []
        if message.startswith(b"b") and fds:
            self._sock = socket.socket(fileno=fds[0])
            return self._sock
        code = int(message[1:]) if message[1:].isdigit() else errno.EADDRINUSE
        if code != errno.EADDRINUSE:
            raise Blocked(f"cannot listen on {self._where}: {os.strerror(code)}")
        from opskit.proxy.listeners import address_taken  # noqa: PLC0415

        holder = address_taken(*self._listen)
        raise Blocked(
            f"cannot listen on {self._where}: {os.strerror(code)} (still in use after "
            f"{format_seconds(self._timeout_s)}{', by ' + holder if holder else ''})"
        )

    def __exit__(self, *exc: object) -> None:
        if self._child is not None:
            if self._child.poll() is None:
                self._child.kill()
            self._child.wait(10)
        self._chan.close()
        if self._sock is not None:
            self._sock.close()
