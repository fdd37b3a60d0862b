"""Typed access to a step's `with:` mapping, so every action validates the same way at load time.

At load time (`opskit validate`) some values are not known yet: they are templates that depend on a value
captured by an earlier step. The engine passes their keys as `deferred`; the getters then check only that
the key is allowed and return a neutral placeholder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from opskit import durations
from opskit.errors import ExitCode, OpskitError

_MISSING: Any = object()


class ParamError(OpskitError):
    """One bad `with:` value; `key` lets the engine point at its line (None: the mapping itself)."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, key: str | None, problem: str) -> None:
        super().__init__(f"with.{key}: {problem}" if key else problem)
        self.key, self.problem = key, problem


class Params:
    """A `with:` mapping read through typed getters; `finish()` rejects keys nobody asked for."""

    def __init__(self, raw: Mapping[str, Any], deferred: frozenset[str] = frozenset()) -> None:
        self._raw = dict(raw)
        self._deferred = deferred
        self._seen: set[str] = set()

    def _get(self, key: str, default: Any) -> tuple[bool, Any]:
        self._seen.add(key)
        if key in self._deferred:
            return True, None
        if key not in self._raw or self._raw[key] is None:
            if default is _MISSING:
                raise ParamError(key, "is required")
            return False, default
        return False, self._raw[key]

    def text(self, key: str, default: Any = _MISSING) -> Any:
        """A string (numbers are accepted and turned into text)."""
        deferred, value = self._get(key, default)
        if deferred:
            return ""
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ParamError(key, f"expected a string, got {type(value).__name__}")
        return str(value)

    def integer(self, key: str, default: Any = _MISSING) -> Any:
        """A whole number."""
        deferred, value = self._get(key, default)
        if deferred:
            return 0
        if value is default:
            return value
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ParamError(key, f"expected a whole number, got {value!r}") from None

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        """true/false (also yes/no, 1/0)."""
        deferred, value = self._get(key, default)
        if deferred:
            return False
        if value is default or isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"true", "yes", "1", "on"}:
            return True
        if text in {"false", "no", "0", "off"}:
            return False
        raise ParamError(key, f"expected true or false, got {value!r}")

    def seconds(self, key: str, default: Any = _MISSING) -> Any:
        """A duration (500ms, 30s, 10m, 24h) in seconds."""
        deferred, value = self._get(key, default)
        if deferred:
            return 0.0
        if value is default:
            return value
        try:
            seconds = durations.parse_seconds(value)
        except durations.DurationError as exc:
            raise ParamError(key, str(exc)) from None
        if not math.isfinite(seconds):  # YAML's .nan and .inf are numbers; no wait can mean them
            raise ParamError(key, f"expected a finite duration like 30s or 10m, got {value!r}")
        return seconds

    def text_list(self, key: str, default: Any = _MISSING) -> Any:
        """A list of strings; a single string (or comma-separated text) is accepted."""
        deferred, value = self._get(key, default)
        if deferred:
            return []
        if value is default:
            return value
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
        ):
            return [str(v) for v in value]
        raise ParamError(key, f"expected a list of strings, got {value!r}")

    def mapping(self, key: str, default: Any = _MISSING) -> Any:
        """A mapping of strings to values."""
        deferred, value = self._get(key, default)
        if deferred:
            return {}
        if value is default:
            return value
        if not isinstance(value, Mapping):
            raise ParamError(key, f"expected a mapping, got {type(value).__name__}")
        return dict(value)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        """One of a fixed set of words."""
        value = self.text(key, default)
        if key in self._deferred or value is default:
            return value if value != "" else choices[0]
        if value not in choices:
            raise ParamError(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def is_deferred(self, key: str) -> bool:
        """True when `key` holds a value only a run can fill (its getter returned a placeholder)."""
        return key in self._deferred

    def finish(self) -> None:
        """Reject keys that the action does not know (a typo must not be silently ignored)."""
        unknown = sorted(set(self._raw) - self._seen)
        if unknown:
            allowed = ", ".join(sorted(self._seen))
            raise ParamError(unknown[0], f"unknown parameter (allowed: {allowed})")
