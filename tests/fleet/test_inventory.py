"""Inventories as Ansible users write them, read from files the tests write: INI, YAML, opskit's own."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from opskit.errors import OpskitError
from opskit.fleet.inventory import load_inventory
from opskit.fleet.limit import select
from opskit.fleet.rollout import allowed_failures, batch_sizes, parse_field


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


INI = """
    # the web tier
    lb ansible_host=10.0.0.1
    [web]
    web[01:03] ansible_user=deploy
    web04 ansible_host=10.0.0.14 ansible_port=2222 http_port=8081

    [web:vars]
    http_port=8080
    tier="front"

    [db]
    db1 ansible_host=10.0.1.1 ansible_ssh_private_key_file=~/.ssh/db

    [prod:children]
    web
    db

    [prod:vars]
    env=prod
    tier=any
"""


def test_ansible_ini_hosts_vars_ranges_and_children(tmp_path: Path) -> None:
    """INI: ansible_host/port/user become the connection, ranges expand, children flatten, vars merge."""
    inv = load_inventory(_file(tmp_path, "hosts", INI))

    assert inv.groups["web"] == ("web01", "web02", "web03", "web04")
    assert inv.groups["prod"] == ("web01", "web02", "web03", "web04", "db1")
    assert inv.groups["ungrouped"] == ("lb",)
    assert list(inv.hosts) == ["lb", "web01", "web02", "web03", "web04", "db1"]
    web04 = inv.hosts["web04"]
    assert (web04.address, web04.port, web04.user) == ("10.0.0.14", 2222, None)
    assert web04.vars == {
        "http_port": 8081,
        "tier": "front",
        "env": "prod",
    }  # host > child group > parent
    assert inv.hosts["web01"].address == "web01"  # no ansible_host: the name is the address
    assert inv.hosts["web01"].user == "deploy"
    assert inv.hosts["db1"].key_file == "~/.ssh/db"


YAML = """
    all:
      vars:
        env: prod
      hosts:
        lb:
          ansible_host: 10.0.0.1
      children:
        web:
          vars: {http_port: 8080}
          hosts:
            web1: {ansible_host: 10.0.0.11, ansible_port: 2201, ansible_user: deploy}
            web2:
        canary:
          hosts:
            web1:
"""


def test_ansible_yaml_groups_children_and_vars(tmp_path: Path) -> None:
    """Ansible's YAML inventory: all/children/hosts/vars, a host in two groups counted once."""
    inv = load_inventory(_file(tmp_path, "inventory.yml", YAML))

    assert inv.groups["web"] == ("web1", "web2")
    assert inv.groups["canary"] == ("web1",)
    assert inv.groups["all"] == ("lb", "web1", "web2")
    web1 = inv.hosts["web1"]
    assert (web1.address, web1.port, web1.user) == ("10.0.0.11", 2201, "deploy")
    assert web1.vars == {"env": "prod", "http_port": 8080}


def test_opskit_yaml_inventory_with_groups_of_groups(tmp_path: Path) -> None:
    """opskit's own inventory: the runbook's host fields plus vars:, and groups that name groups."""
    path = _file(
        tmp_path,
        "fleet.yaml",
        """
        hosts:
          web1: {address: 10.0.0.11, port: 2222, vars: {weight: 3}}
          web2: 10.0.0.12
          db1: {address: 10.0.1.1, user: postgres}
          groups:
            web: [web1, web2]
            everything: [web, db1]
    """,
    )

    inv = load_inventory(path)

    assert inv.groups["everything"] == ("web1", "web2", "db1")
    assert inv.hosts["web1"].vars == {"weight": 3}
    assert inv.hosts["web2"].address == "10.0.0.12"
    assert inv.hosts["db1"].user == "postgres"


def test_bad_inventory_lines_are_reported_at_file_and_line(tmp_path: Path) -> None:
    """A malformed INI line is one FILE:LINE message, not a traceback."""
    path = _file(tmp_path, "hosts", "[web]\nweb1 ansible_port\n")

    with pytest.raises(OpskitError, match=r"hosts:2:1: expected key=value"):
        load_inventory(path)


HOSTS = ("web1", "web2", "web3", "db1", "db2")
GROUPS = {"web": ("web1", "web2", "web3"), "db": ("db1", "db2"), "canary": ("web1",)}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("web", ("web1", "web2", "web3")),
        ("web:!web2", ("web1", "web3")),
        ("web,db1", ("web1", "web2", "web3", "db1")),
        ("web:!canary", ("web2", "web3")),
        ("!db", ("web1", "web2", "web3")),
        ("web*:&canary", ("web1",)),
        ("db2:web1", ("web1", "db2")),  # definition order, never pattern order
        ("d*", ("db1", "db2")),
    ],
)
def test_limit_patterns_as_ansible_reads_them(pattern: str, expected: tuple[str, ...]) -> None:
    """--limit: groups, hosts, globs, !exclusions and &intersections, comma or colon separated."""
    assert select(pattern, HOSTS, GROUPS) == expected


def test_limit_with_an_unknown_name_is_bad_input() -> None:
    """A typo in --limit is refused, naming the term, instead of silently selecting nothing."""
    with pytest.raises(OpskitError, match="no host or group named 'wbe'"):
        select("wbe", HOSTS, GROUPS)


def test_batches_and_max_failures_arithmetic() -> None:
    """[1, 25%, 100%] over 10 hosts is 1, 2, 7; the last size repeats; 10% of 25 allows 2 failures."""
    assert batch_sizes(10, ("1", "25%", "100%")) == [1, 2, 7]
    assert batch_sizes(7, ("2",)) == [2, 2, 2, 1]
    assert batch_sizes(3, ()) == [3]
    assert allowed_failures("10%", 25) == 2
    assert allowed_failures(None, 25) == 0
    assert parse_field("batches", [1, "25%"]) == (None, ("1", "25%"))
    assert parse_field("parallel", 0)[0] is not None
    assert parse_field("max_failures", "150%")[0] is not None
