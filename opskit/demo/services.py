"""The "old" and the "new" service: line-based TCP servers that say which host answered each line.

`old: ack hello` or `new: ack hello`: a client (or a person with `nc`) sees at once who served it, also
through the bridge. Connections are long-lived; each host counts its connections per client address.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

_MAX_LINE = 4096


@dataclass(frozen=True)
class ServiceStats:
    """What one service host saw: connections now and in total, per client address, lines answered."""

    name: str
    address: str
    running: bool
    active: int
    total: int
    lines: int
    per_client: dict[str, int] = field(default_factory=dict)


class Service:
    """One host's service on HOST:PORT; `start()`/`stop()` (stop also closes open connections)."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._total = 0
        self._lines = 0
        self._per_client: Counter[str] = Counter()
        self.read_only = False  # "stop writes": still answers, says so

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (SO_REUSEADDR, so a restart right after a stop binds again)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, reuse_address=True
            )
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close every connection, as `systemctl stop` would."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task, writer in list(self._conns.items()):
            writer.close()
            task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2)
        await server.wait_closed()

    def stats(self) -> ServiceStats:
        return ServiceStats(
            name=self.name,
            address=self.address,
            running=self.running,
            active=len(self._conns),
            total=self._total,
            lines=self._lines,
            per_client=dict(self._per_client),
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always inside a task
        self._conns[task] = writer
        self._total += 1
        peer = writer.get_extra_info("peername")
        self._per_client[str(peer[0]) if peer else "?"] += 1
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                self._lines += 1
                text = raw[:_MAX_LINE].decode(errors="replace").strip()
                suffix = " (read-only)" if self.read_only else ""
                writer.write(f"{self.name}: ack {text}{suffix}\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError, ValueError):
            pass
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
