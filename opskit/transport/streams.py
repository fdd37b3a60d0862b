"""Line splitting and bounded tails shared by the local and SSH transports."""

from __future__ import annotations

import time

from opskit.transport.base import CommandResult, OutputSink

# Everything is streamed to on_output; only this much of each stream is kept in the result, so a step
# that prints gigabytes cannot exhaust memory (or the journal).
TAIL_BYTES = 64 * 1024


class StreamTail:
    """One output stream: hands complete lines to the sink as they arrive and keeps the last bytes."""

    def __init__(self, name: str, sink: OutputSink | None, cap_bytes: int = TAIL_BYTES) -> None:
        self.name = name
        self._sink = sink
        self._cap = cap_bytes
        self._tail = bytearray()
        self._partial = bytearray()
        self.total_bytes = 0

    def feed(self, data: bytes) -> None:
        """Record a chunk; every complete line goes to the sink now."""
        if not data:
            return
        self.total_bytes += len(data)
        self._tail += data
        if len(self._tail) > 2 * self._cap:
            del self._tail[: len(self._tail) - self._cap]
        self._partial += data
        while True:
            cut = self._partial.find(b"\n")
            if cut < 0:
                break
            self._emit(bytes(self._partial[:cut]))
            del self._partial[: cut + 1]
        # A line with no end in sight is still shown, in cap-sized pieces.
        while len(self._partial) >= self._cap:
            self._emit(bytes(self._partial[: self._cap]))
            del self._partial[: self._cap]

    def close(self) -> None:
        """The stream ended: a last line without a newline is still a line."""
        if self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()

    def text(self) -> str:
        """The kept tail, decoded (a cut through a UTF-8 sequence shows as a replacement character)."""
        return bytes(self._tail[-self._cap :]).decode("utf-8", errors="replace")

    def _emit(self, raw: bytes) -> None:
        if self._sink is not None:
            line = raw.decode("utf-8", errors="replace")
            self._sink(self.name, line.removesuffix("\r"))


def open_tails(sink: OutputSink | None, cap_bytes: int = TAIL_BYTES) -> dict[str, StreamTail]:
    """A tail for "stdout" and one for "stderr", both streaming to `sink`."""
    return {name: StreamTail(name, sink, cap_bytes) for name in ("stdout", "stderr")}


def command_result(
    command: str, rc: int, tails: dict[str, StreamTail], *, started: float, timed_out: bool
) -> CommandResult:
    """The result of a finished command; `started` is its time.monotonic() start."""
    return CommandResult(
        command=command,
        rc=rc,
        stdout=tails["stdout"].text(),
        stderr=tails["stderr"].text(),
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
    )
