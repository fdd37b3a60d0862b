"""Secret values and masking: every egress (terminal, journal, report, JSON) goes through a Masker."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"


class Masker:
    """Replaces every known secret value with *** in text and in nested JSON-like values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *values: str) -> None:
        """Register more secret values (for example a TSIG key read at run time)."""
        # Very short values would mask ordinary words; they are still never printed on purpose.
        self._values.update(v for v in values if v and len(v) >= 3)
        # Output is masked line by line: a multi-line secret (a key, a certificate) is masked on every
        # line it spans, so each of its lines is a secret of its own.
        for value in values:
            lines = [line.strip() for line in value.strip().splitlines()]
            if len(lines) > 1:
                self._values.update(line for line in lines if len(line) >= 4)
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def text(self, text: str) -> str:
        """The text with every secret value replaced by ***."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string masked, recursively."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def __bool__(self) -> bool:
        return bool(self._values)
