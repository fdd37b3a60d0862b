"""A TCP relay on 127.0.0.1 that can cut the network between opskit and a server without either end noticing.

`freeze()` is the power cut or partition on opskit's side: the relay stops passing bytes on every
connection it holds and keeps both sockets open, so when opskit dies the server sees no EOF and its
command runs on (what sshd does until its keepalives give up). Connections made later pass normally;
`refuse()` makes them fail instead (a host that cannot be reached). Everything closes when the relay stops.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.servers.common import free_port

_TICK_S = 0.1


@dataclass
class Relay:
    """Where the relay listens, and the switches of the network behind it."""

    port: int
    target: tuple[str, int]
    frozen: set[socket.socket] = field(default_factory=set)
    refusing: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    live: dict[socket.socket, socket.socket] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def freeze(self) -> None:
        """Stop passing bytes on every connection open now; neither end sees it close."""
        with self.lock:
            self.frozen |= set(self.live)

    def refuse(self, refusing: bool = True) -> None:
        """New connections are closed at once (the server cannot be reached), or pass again."""
        self.refusing = refusing


def _accept(relay: Relay, listener: socket.socket, sel: selectors.BaseSelector) -> None:
    client, _ = listener.accept()
    if relay.refusing:
        client.close()
        return
    upstream = socket.create_connection(relay.target, timeout=5)
    with relay.lock:
        relay.live[client], relay.live[upstream] = upstream, client
    sel.register(client, selectors.EVENT_READ)
    sel.register(upstream, selectors.EVENT_READ)


def _pass(relay: Relay, sock: socket.socket, sel: selectors.BaseSelector) -> None:
    with relay.lock:
        peer = relay.live.get(sock)
        frozen = sock in relay.frozen or peer in relay.frozen
    try:
        data = sock.recv(65536)
    except OSError:
        data = b""
    if frozen:
        if not data:  # the far end went away; the other end must not learn it
            sel.unregister(sock)
        return
    if data and peer is not None:
        with contextlib.suppress(OSError):
            peer.sendall(data)
            return
    for s in (sock, peer):
        if s is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(s)
            s.close()
            with relay.lock:
                relay.live.pop(s, None)


def _serve(relay: Relay, listener: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while not relay.stopped.is_set():
        for key, _ in sel.select(_TICK_S):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                _accept(relay, listener, sel)
            else:
                _pass(relay, sock, sel)
    sel.close()


@contextlib.contextmanager
def relay_to(host: str, port: int) -> Iterator[Relay]:
    """A relay on a free 127.0.0.1 port to host:port, stopped (every connection closed) on exit."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen_port = free_port()
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(16)
    relay = Relay(listen_port, (host, port))
    thread = threading.Thread(target=_serve, args=(relay, listener), daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stopped.set()
        thread.join(timeout=5)
        listener.close()
        with relay.lock:
            for s in list(relay.live):
                s.close()
            relay.live.clear()
