"""`ProxyJump` as `ssh` reads it from ~/.ssh/config: one bastion or a chain, every hop's host key verified.

Each hop is an `SshTransport` of its own (so its host key is checked against known_hosts, its
HostName/User/Port/IdentityFile come from the config, and a failure names the hop); the next hop, and
finally the target, is reached through a `direct-tcpip` channel of the previous one, as `ssh -J` does.
As in OpenSSH, a hop's own ProxyJump is not followed: the chain is the one the target names.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from opskit.errors import TransportError
from opskit.transport.base import HostSpec

Opener = Callable[[str, int], Any]  # (host, port) -> a socket-like object paramiko can use


def parse_hop(hop: str) -> tuple[str | None, str, int]:
    """`[user@]host[:port]` -> (user, host, port); port 22 lets the config's Port apply."""
    user, _, rest = hop.rpartition("@")
    host, port = rest, 22
    if rest.startswith("["):  # [::1]:2222
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") and tail[1:].isdigit() else 22
    elif rest.count(":") == 1:
        host, _, text = rest.partition(":")
        port = int(text) if text.isdigit() else 22
    return user or None, host, port


class JumpSocket:
    """The target's socket: a channel through the last hop; closing it closes every hop too."""

    def __init__(self, channel: paramiko.Channel, hops: list[Any]) -> None:
        self._channel = channel
        self._hops = hops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def close(self) -> None:
        # A hop already gone (the bastion dropped) leaves nothing to close: never an error on close.
        with contextlib.suppress(Exception):
            self._channel.close()
        for hop in reversed(self._hops):
            with contextlib.suppress(Exception):
                hop.close()


def channel_opener(label: str, hop: Any, where: str) -> Opener:
    """Open `direct-tcpip` channels to (host, port) through a connected hop transport."""

    def open_channel(host: str, port: int) -> paramiko.Channel:
        transport = hop._connected().get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("not connected")
            channel: paramiko.Channel = transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=10.0
            )
            return channel
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(
                label, f"jump host {where} could not reach {host}:{port}: {exc} (nothing ran)"
            ) from None

    return open_channel


def _direct(host: str, port: int, *, timeout_s: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout_s)


def open_through(label: str, hops: tuple[str, ...], *, known_hosts: Path, ssh_config: Path | None,
                 accept_new_host_keys: bool, connect_timeout_s: float) -> Opener:  # fmt: skip
    """An opener that connects every hop in order and hands back a channel to the target."""
    from opskit.transport.ssh import SshTransport  # noqa: PLC0415 - ssh imports this module

    def open_target(host: str, port: int) -> JumpSocket:
        opened: list[Any] = []
        # The first hop directly (never through its own ProxyJump, as OpenSSH), each next one through the last.
        via: Opener = functools.partial(_direct, timeout_s=connect_timeout_s)
        try:
            for hop in hops:
                user, address, hop_port = parse_hop(hop)
                spec = HostSpec(name=f"{label} (jump host {hop})", address=address, port=hop_port, user=user,
                                known_hosts=str(known_hosts))  # fmt: skip
                transport = SshTransport(spec, accept_new_host_keys=accept_new_host_keys, ssh_config=ssh_config,
                                         connect_timeout_s=connect_timeout_s, via=via)  # fmt: skip
                transport.check_reachable()  # host key verified, authenticated: or a one-line error naming it
                opened.append(transport)
                via = channel_opener(label, transport, hop)
            return JumpSocket(via(host, port), opened)
        except BaseException:
            for transport in reversed(opened):
                with contextlib.suppress(Exception):
                    transport.close()
            raise

    return open_target
