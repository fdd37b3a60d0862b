"""Does an HTTP endpoint answer with the expected status (and body)? Redirects are not followed:
a health check that suddenly answers 301 is worth knowing about."""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opskit.net.tcp import NO_ROUTE, socket_error_words
from opskit.transport.base import CommandResult

# Enough for any health page; a `contains` check never reads a whole download.
BODY_LIMIT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class HttpResult:
    """One request: the status it got (None when no answer), how long it took, and what was wrong."""

    url: str
    ok: bool
    status: int | None
    expect_status: int
    elapsed_s: float
    error: str | None  # None when ok

    def describe(self) -> str:
        """One line for the operator: "200 in 12 ms from http://..." or what went wrong."""
        took = f"{self.elapsed_s * 1000:.0f} ms"
        if self.ok:
            return f"{self.status} in {took} from {self.url}"
        return f"{self.url}: {self.error} ({took})"


class BadUrl(ValueError):
    """A URL the check cannot use (not http/https, no host)."""


def parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of an http(s) URL; BadUrl otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadUrl(f"expected an http:// or https:// URL, got {url!r}")
    if not parts.hostname:
        raise BadUrl(f"no host in {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadUrl(f"bad port in {url!r}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def verdict(
    status: int, expect_status: int, body: bytes | None, contains: str | None
) -> str | None:
    """None when the answer is what was expected, else the reason in words."""
    if status != expect_status:
        return f"status {status}, expected {expect_status}"
    if contains is not None and (body is None or contains.encode() not in body):
        return f"body does not contain {contains!r}"
    return None


def http_check(
    url: str,
    expect_status: int = 200,
    timeout_s: float = 5.0,
    contains: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpResult:
    """GET `url` from this machine and compare the status (and body) with what is expected."""
    scheme, host, port, path = parse_url(url)
    started = time.monotonic()
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(
            host, port, timeout=timeout_s, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"User-Agent": "opskit-http-check", **(headers or {})})
        response = conn.getresponse()
        body = response.read(BODY_LIMIT_BYTES) if contains is not None else None
        status = response.status
    except ssl.SSLError as exc:
        return HttpResult(
            url,
            False,
            None,
            expect_status,
            time.monotonic() - started,
            f"TLS error: {exc.reason or exc}",
        )
    except OSError as exc:
        error = socket_error_words(exc, host, timeout_s)
        return HttpResult(url, False, None, expect_status, time.monotonic() - started, error)
    except http.client.HTTPException as exc:
        error = f"not an HTTP answer ({type(exc).__name__})"
        return HttpResult(url, False, None, expect_status, time.monotonic() - started, error)
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    problem = verdict(status, expect_status, body, contains)
    return HttpResult(url, problem is None, status, expect_status, elapsed, problem)


def _curl_quote(value: str) -> str:
    if any(ord(c) < 0x20 for c in value):
        # A newline would start a new config line: header or option injection.
        raise BadUrl(f"control characters are not allowed in a URL or header: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def curl_config(
    url: str, timeout_s: float, with_body: bool, headers: Mapping[str, str] | None
) -> str:
    """A curl config (read with `curl -K -` from stdin) for the same request from another host.

    Everything, URL and headers included, travels on stdin: a token in either never shows in `ps`.
    The status code is the last line of output, after the body when the body is needed.
    """
    lines = [
        f"url = {_curl_quote(url)}",
        f"max-time = {timeout_s:g}",
        "silent",
        "show-error",
        f"user-agent = {_curl_quote('opskit-http-check')}",
        'write-out = "\\n%{http_code}"',  # curl expands the \n escape in config strings
    ]
    if not with_body:
        lines.append('output = "/dev/null"')
    lines.extend(f"header = {_curl_quote(f'{k}: {v}')}" for k, v in (headers or {}).items())
    return "\n".join(lines) + "\n"


REMOTE_COMMAND = "curl -K -"
CURL_ERRORS = {
    6: "cannot resolve host",
    7: "refuses connections",
    28: "timed out",
    35: "TLS error",
    52: "empty reply from server",
    56: "connection reset",
    60: "TLS certificate not trusted",
}


def from_curl(
    url: str, expect_status: int, contains: str | None, result: CommandResult
) -> HttpResult:
    """Read the outcome of `curl -K -` (exit code, body + status line) as an HttpResult."""
    rc, stdout, stderr, elapsed_s = result.rc, result.stdout, result.stderr, result.duration_s
    if result.timed_out:
        return HttpResult(url, False, None, expect_status, elapsed_s, "timed out")
    if rc != 0:
        if rc == 127:
            error = "curl is not installed on that host"
        elif rc == 7 and "no route" in stderr.lower():
            error = NO_ROUTE
        else:
            error = (
                CURL_ERRORS.get(rc) or (stderr.strip().splitlines() or [f"curl exit code {rc}"])[-1]
            )
        return HttpResult(url, False, None, expect_status, elapsed_s, error)
    body, _, code = stdout.rpartition("\n")
    status = int(code) if code.strip().isdigit() and int(code) > 0 else None
    if status is None:
        return HttpResult(url, False, None, expect_status, elapsed_s, "no HTTP status from curl")
    problem = verdict(status, expect_status, body.encode(), contains)
    return HttpResult(url, problem is None, status, expect_status, elapsed_s, problem)
