"""TSIG key files as BIND writes them (`tsig-keygen`, `nsupdate -k`), read with line numbers.

    key "opskit" {
        algorithm hmac-sha256;
        secret "base64...";
    };

Every HMAC algorithm BIND can name is accepted, in its short form (`hmac-md5`) and its long one
(`hmac-md5.sig-alg.reg.int`, RFC 8945 section 6); anything else, and any syntax error, is one line
naming the file and the line. The secret never appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from opskit.errors import UsageError

# BIND's names (lower case, no trailing dot) -> the algorithm name on the wire (dnspython's spelling)
ALGORITHMS = {
    "hmac-md5": "hmac-md5.sig-alg.reg.int.",
    "hmac-md5.sig-alg.reg.int": "hmac-md5.sig-alg.reg.int.",
    "hmac-sha1": "hmac-sha1.",
    "hmac-sha224": "hmac-sha224.",
    "hmac-sha256": "hmac-sha256.",
    "hmac-sha384": "hmac-sha384.",
    "hmac-sha512": "hmac-sha512.",
    "hmac-sha256-128": "hmac-sha256-128.",
    "hmac-sha384-192": "hmac-sha384-192.",
    "hmac-sha512-256": "hmac-sha512-256.",
}
DEFAULT_ALGORITHM = "hmac-sha256"
_TOKEN = re.compile(
    r'(?P<space>\s+)|(?P<comment>(?:#|//)[^\n]*|/\*.*?\*/)|"(?P<string>[^"]*)"|(?P<punct>[{};])'
    r'|(?P<word>[^\s{};"#]+)|(?P<bad>.)',
    re.DOTALL,
)


class BadKey(UsageError):
    """A TSIG key file that cannot be read or parsed; names the file, the line and what is wrong."""


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key as `tsig-keygen` writes it and `nsupdate -k` reads it."""

    name: str
    algorithm: str
    secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"TsigKey(name={self.name!r}, algorithm={self.algorithm!r}, secret=***)"


def wire_algorithm(name: str) -> str | None:
    """The on-the-wire name of a BIND algorithm name (any case, trailing dot or not), or None."""
    return ALGORITHMS.get(name.strip().lower().rstrip("."))


@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "punct", "word"
    text: str
    line: int


def _tokens(text: str, where: str) -> list[_Token]:
    tokens: list[_Token] = []
    line = 1
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "bad"
        value = match.group(kind)
        if kind == "bad":
            raise BadKey(f"{where}:{line}: unexpected {value!r}")
        if kind not in ("space", "comment"):
            tokens.append(_Token(kind, value, line))
        line += match.group(0).count("\n")
    return tokens


class _Reader:
    """Tokens in order, with the line of the last one for messages about what is missing."""

    def __init__(self, tokens: list[_Token], where: str, last_line: int) -> None:
        self._tokens, self._at, self._where, self._end = tokens, 0, where, last_line

    def fail(self, problem: str, line: int | None = None) -> BadKey:
        return BadKey(f"{self._where}:{line or self._line()}: {problem}")

    def _line(self) -> int:
        return self._tokens[self._at].line if self._at < len(self._tokens) else self._end

    def peek(self) -> _Token | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def take(self, expected: str, after: str) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail(f"expected {expected} after {after}, got the end of the file")
        if expected.startswith("'") and token.text != expected.strip("'"):
            raise self.fail(f"expected {expected} after {after}, got {token.text!r}", token.line)
        self._at += 1
        return token


def parse_key_text(text: str, where: str = "key file") -> TsigKey:
    """The first `key "name" { algorithm ...; secret "..."; };` block of a BIND key file."""
    tokens = _tokens(text, where)
    reader = _Reader(tokens, where, max(1, text.count("\n") + (0 if text.endswith("\n") else 1)))
    while (token := reader.peek()) is not None and token.text.lower() != "key":
        reader.take("key", "the start")  # skip other statements' words up to the first key
    if reader.peek() is None:
        raise BadKey(f'{where}: no key "NAME" {{ algorithm ...; secret "..."; }}; block')
    reader.take("'key'", "the start")
    name = reader.take("a key name", "key")
    if name.kind == "punct":
        raise reader.fail(f"expected a key name after key, got {name.text!r}", name.line)
    reader.take("'{'", f"key {name.text}")
    fields: dict[str, _Token] = {}
    while (token := reader.peek()) is not None and token.text != "}":
        field = reader.take("a statement", "'{'")
        value = reader.take("a value", field.text)
        reader.take("';'", f"{field.text} {value.text if field.text != 'secret' else '...'}")
        fields[field.text.lower()] = value
    reader.take("'}'", f"the statements of key {name.text}")
    reader.take("';'", "'}'")
    return _key(name, fields, reader)


def _key(name: _Token, fields: dict[str, _Token], reader: _Reader) -> TsigKey:
    secret = fields.get("secret")
    if secret is None:
        raise reader.fail(f"key {name.text!r} has no secret", name.line)
    try:
        base64.b64decode(secret.text, validate=True)
    except (binascii.Error, ValueError):
        raise reader.fail(f"the secret of key {name.text!r} is not base64", secret.line) from None
    given = fields.get("algorithm")
    algorithm = given.text.lower().rstrip(".") if given else DEFAULT_ALGORITHM
    if given is not None and wire_algorithm(algorithm) is None:
        known = ", ".join(a for a in ALGORITHMS if "." not in a)
        raise reader.fail(
            f"unknown TSIG algorithm {given.text!r} (expected one of {known})", given.line
        )
    return TsigKey(name.text, algorithm, secret.text)


def load_key_file(path: str | Path) -> TsigKey:
    """Read a BIND key file; one-line errors for a missing or unreadable file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise BadKey(f"cannot read TSIG key file {path}: {why or exc}") from None
    return parse_key_text(text, str(path))
