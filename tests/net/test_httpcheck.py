"""http_check: status, body and failures of an HTTP endpoint, from this machine."""

from __future__ import annotations

import pytest

from opskit.net.httpcheck import BadUrl, curl_config, from_curl, http_check, parse_url
from opskit.transport.base import CommandResult
from tests.servers.common import free_port
from tests.servers.health_http import LAB_TOKEN, HealthHttp, health_http  # noqa: F401


def test_expected_status_is_ok(health_http: HealthHttp) -> None:  # noqa: F811
    """An endpoint answering the expected status passes, with the time it took."""
    result = http_check(health_http.url("/health"), 200, timeout_s=2, contains="healthy")

    assert result.ok
    assert result.status == 200
    assert result.error is None
    assert 0 <= result.elapsed_s < 2
    assert result.describe().startswith("200 in ")


def test_wrong_status_says_what_came_back(health_http: HealthHttp) -> None:  # noqa: F811
    """A 503 where 200 is expected fails and names both statuses."""
    result = http_check(health_http.url("/down"), 200, timeout_s=2)

    assert not result.ok
    assert result.status == 503
    assert result.error == "status 503, expected 200"


def test_redirects_are_not_followed(health_http: HealthHttp) -> None:  # noqa: F811
    """A health URL that suddenly redirects is reported, not silently followed."""
    assert http_check(health_http.url("/moved"), 200, timeout_s=2).status == 301
    assert http_check(health_http.url("/moved"), 301, timeout_s=2).ok


def test_missing_body_text_fails(health_http: HealthHttp) -> None:  # noqa: F811
    """`contains` fails the check when the body lacks the text."""
    result = http_check(health_http.url("/health"), 200, timeout_s=2, contains="degraded")

    assert not result.ok
    assert result.error == "body does not contain 'degraded'"


def test_headers_are_sent(health_http: HealthHttp) -> None:  # noqa: F811
    """Custom headers (an auth token) reach the server."""
    url = health_http.url("/auth")

    assert http_check(url, 200, timeout_s=2).status == 401
    assert http_check(url, 200, timeout_s=2, headers={"Authorization": f"Bearer {LAB_TOKEN}"}).ok


def test_slow_endpoint_times_out(health_http: HealthHttp) -> None:  # noqa: F811
    """An endpoint slower than the timeout fails with 'timed out', not a traceback."""
    result = http_check(health_http.url("/slow"), 200, timeout_s=0.3)

    assert not result.ok
    assert result.status is None
    assert result.error == "timed out after 0.3 s"


def test_closed_port_refuses_connections() -> None:
    """Nothing listening reads 'refuses connections'."""
    result = http_check(f"http://127.0.0.1:{free_port()}/health", 200, timeout_s=2)

    assert result.error == "refuses connections"


def test_only_http_urls_are_accepted() -> None:
    """A URL that is not http(s) is refused before anything is sent."""
    with pytest.raises(BadUrl, match="http:// or https://"):
        parse_url("ftp://example.test/")
    assert parse_url("http://h:8080/a?b=1") == ("http", "h", 8080, "/a?b=1")


def test_curl_config_keeps_url_and_headers_off_the_command_line() -> None:
    """The remote request's URL and headers are written as a curl config, quoted safely."""
    config = curl_config('http://h/x?a="1"', 5, False, {"Authorization": "Bearer t\\k"})

    assert 'url = "http://h/x?a=\\"1\\""' in config
    assert 'header = "Authorization: Bearer t\\\\k"' in config
    assert 'output = "/dev/null"' in config


def test_curl_outcomes_read_like_local_ones() -> None:
    """curl's exit codes and status line become the same results as a local check."""
    ok = from_curl("u", 200, "healthy", CommandResult("curl", 0, "healthy\n\n200", "", 0.2))
    refused = from_curl("u", 200, None, CommandResult("curl", 7, "", "Failed to connect", 0.1))
    late = from_curl("u", 200, None, CommandResult("curl", 28, "", "", 5.0))

    assert (ok.ok, ok.status) == (True, 200)
    assert refused.error == "refuses connections"
    assert late.error == "timed out"
