"""How the rehearsal's runbook steps start and stop the demo services: a one-line control socket.

On a real night a step runs `systemctl stop dispatch`; in the rehearsal the services live inside the demo
process, so the same step runs `opskit demo ctl PORT stop old`, which sends one line here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from opskit.demo.services import Service

_VERBS = ("start", "stop", "status", "read-only", "read-write")


class ControlServer:
    """Listens on 127.0.0.1 (a free port) for `VERB NAME` lines; answers `ok ...` or `error ...`."""

    def __init__(self, services: dict[str, Service], host: str = "127.0.0.1") -> None:
        self.services = services
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self.log: list[str] = []  # every command received, in order

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readline(), timeout=5)
            reply = await self.handle(raw.decode(errors="replace").strip())
            writer.write((reply + "\n").encode())
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle(self, command: str) -> str:
        """One command; the answer starts with `ok` or `error`."""
        self.log.append(command)
        verb, _, name = command.partition(" ")
        service = self.services.get(name.strip())
        if verb not in _VERBS or service is None:
            return f"error: expected one of {'|'.join(_VERBS)} {'|'.join(self.services)}"
        if verb == "start":
            await service.start()
        elif verb == "stop":
            await service.stop()
        elif verb in ("read-only", "read-write"):
            service.read_only = verb == "read-only"
        state = "running" if service.running else "stopped"
        if service.running and service.read_only:
            state += " read-only"
        return f"ok {service.name} {state} on {service.address}"


def send(port: int, command: str, *, host: str = "127.0.0.1", timeout_s: float = 5.0) -> str:
    """Send one command to the control socket and return the answer line."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(command.encode() + b"\n")
        stream = sock.makefile("r", encoding="utf-8")
        return stream.readline().strip()
