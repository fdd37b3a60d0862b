"""The bridge fixtures of tests/proxy (nginx as the new host, the built-in forwarder as a process)."""

from tests.proxy.conftest import forwarder, nginx  # noqa: F401 - re-exported fixtures
