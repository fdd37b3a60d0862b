"""Typed access to a step's `with:` mapping, so every action validates the same way at load time.

At load time (`opskit validate`) some values are not known yet: they are templates that depend on a value
captured by an earlier step. The engine passes their keys as `deferred`; the getters then check only that
the key is allowed and return a neutral placeholder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
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


class ShellCommand(str):
    """A `with:` value that is a shell command (proxy.start's `stop_old`), rendered like `run:` (issue #10).

    The text is what runs: each `{{ }}` value quoted as one argument, each secret a `$OPSKIT_SECRET_*`
    reference, never its value. `shown` is what the operator reads (secrets as ***); `secret_vars` maps
    each environment variable the text reads to the secret it carries, so the value can be handed over
    in the environment when the command runs, and looked up again when a journaled command runs later.
    """

    shown: str
    secret_vars: Mapping[str, str]

    def __new__(
        cls, text: str, shown: str | None = None, secret_vars: Mapping[str, str] | None = None
    ) -> ShellCommand:
        command = super().__new__(cls, text)
        command.shown = text if shown is None else shown
        command.secret_vars = dict(secret_vars or {})
        return command


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

    def command(self, key: str, default: Any = _MISSING) -> Any:
        """Shell text run on the step's host: a ShellCommand (the engine renders it like `run:`)."""
        value = self.text(key, default)
        if value is default:
            return value
        raw = self._raw.get(key)
        return raw if isinstance(raw, ShellCommand) else ShellCommand(value)

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


@dataclass(frozen=True)
class ParamSpec:
    """One `with:` key as an action's `from_params` reads it: what `opskit actions` shows."""

    key: str
    # text | shell command | whole number | true/false | duration | list of text | mapping | one of: a, b
    type: str
    required: bool
    default: Any = None


# Values a recorder hands back for keys the example leaves out: shaped like what a night would use, so
# `from_params` gets past its own checks and the generated example validates.
_SAMPLES: dict[str, Any] = {
    "url": "https://dispatch.example.net/health",
    "listen": "203.0.113.10:443",
    "to": "198.51.100.20:443",
    "server": "ns1.example.net:53",
    "host": "198.51.100.20",
    "port": 443,
    "name": "dispatch.example.net",
    "names": ["dispatch.example.net"],
    "zone": "example.net",
    "set": ["198.51.100.20"],
    "expect": ["198.51.100.20"],
    "stats_file": "/var/lib/opskit/bridge-stats.json",
    "tsig_key_file": "/etc/opskit/dns-update.key",
}
_TYPE_SAMPLES: dict[str, Any] = {
    "text": "example",
    "shell command": "systemctl stop dispatch",
    "whole number": 1,
    "true/false": True,
    "duration": "30s",
    "list of text": ["example"],
    "mapping": {},
}


class SpecRecorder(Params):
    """Params that record every key an action reads (type, default, required) and answer with samples.

    Docs come from the very getters `validate` runs, so they cannot drift from what is accepted.
    """

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        super().__init__(raw or {})
        self.specs: dict[str, ParamSpec] = {}
        self._types: dict[str, str] = {}

    def _note(self, key: str, kind: str, default: Any) -> None:
        if key not in self.specs:
            required = default is _MISSING
            self._types[key] = kind
            self.specs[key] = ParamSpec(key, kind, required, None if required else default)

    def sample(self, key: str) -> Any:
        """What this recorder answers for `key` when it is not given."""
        kind = self._types.get(key, "text")
        if kind.startswith("one of: "):
            return kind.removeprefix("one of: ").split(", ")[0]
        return _SAMPLES.get(key, _TYPE_SAMPLES.get(kind, "example"))

    def _get(self, key: str, default: Any) -> tuple[bool, Any]:
        self._seen.add(key)
        if key in self._raw:
            return False, self._raw[key]
        if default is not _MISSING:
            return False, default
        return False, self.sample(key)

    def text(self, key: str, default: Any = _MISSING) -> Any:
        self._note(key, "text", default)
        return super().text(key, default)

    def command(self, key: str, default: Any = _MISSING) -> Any:
        self._note(key, "shell command", default)
        return super().command(key, default)

    def integer(self, key: str, default: Any = _MISSING) -> Any:
        self._note(key, "whole number", default)
        return super().integer(key, default)

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        self._note(key, "true/false", default)
        return super().flag(key, default)

    def seconds(self, key: str, default: Any = _MISSING) -> Any:
        self._note(key, "duration", default)
        return super().seconds(key, default)

    def text_list(self, key: str, default: Any = _MISSING) -> Any:
        self._note(key, "list of text", default)
        return super().text_list(key, default)

    def mapping(self, key: str, default: Any = _MISSING) -> Any:
        self._note(key, "mapping", default)
        return super().mapping(key, default)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        self._note(key, "one of: " + ", ".join(choices), default)
        return super().choice(key, choices, default)
