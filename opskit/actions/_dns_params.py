"""`with:` keys shared by the dns.* actions, validated at load time like every action's."""

from __future__ import annotations

from dataclasses import dataclass

from opskit.actions.params import ParamError, Params
from opskit.dns.query import QueryOptions
from opskit.dns.servers import (
    Server,
    ServerChoice,
    parse_nameservers,
    parse_servers,
    split_host_port,
)
from opskit.errors import OpskitError


@dataclass(frozen=True)
class ServerParams:
    """Which servers to ask and how hard (the same options as the `opskit dns` commands)."""

    nameservers: tuple[str, ...] = ()
    resolvers: tuple[str, ...] = ()
    auth_port: int | None = None  # None: the port of the plain nameservers, else 53
    query_timeout_s: float = 2.0
    retries: int = 2
    family: int | None = None  # 4 or 6: ask only nameserver addresses of that family (-4/-6)

    @classmethod
    def read(cls, params: Params) -> ServerParams:
        """Read nameservers, resolvers, auth_port, query_timeout, retries, family; check their syntax."""
        port = params.integer("auth_port", 0)
        if not 0 <= port < 65536:
            raise ParamError("auth_port", f"expected a port from 1 to 65535, got {port}")
        retries = params.integer("retries", 2)
        if not 0 <= retries <= 10:
            raise ParamError("retries", f"expected 0 to 10, got {retries}")
        family = params.integer("family", 0)
        if family not in (0, 4, 6):
            raise ParamError(
                "family", f"expected 4 or 6 (IPv4 or IPv6 nameserver addresses), got {family}"
            )
        found = cls(
            tuple(params.text_list("nameservers", [])),
            tuple(params.text_list("resolvers", [])),
            port or None,
            params.seconds("query_timeout", 2.0) or 2.0,
            retries,
            family or None,
        )
        found.validate()
        return found

    def validate(self) -> None:
        """Check the HOST[:PORT] syntax at load time (no lookups; templates are checked later)."""
        for key, values in (("nameservers", self.nameservers), ("resolvers", self.resolvers)):
            for value in values:
                if "{{" in value:
                    continue
                target = value.partition("=")[2] if key == "nameservers" and "=" in value else value
                try:
                    split_host_port(key, target, self.auth_port or 53)
                except OpskitError as exc:
                    raise ParamError(key, str(exc)) from None

    def choice(self) -> ServerChoice:
        """The nameservers as the dns library takes them."""
        return parse_nameservers(self.nameservers, self.auth_port, self.family)

    def query_options(self) -> QueryOptions:
        """How hard to try, as the dns library takes it."""
        return QueryOptions(timeout_s=self.query_timeout_s, retries=self.retries)

    def resolver_servers(self) -> tuple[Server, ...]:
        """The resolvers as the dns library takes them."""
        return tuple(parse_servers("resolvers", self.resolvers))
