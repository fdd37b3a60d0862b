"""`opskit actions`: the docs come from the checks validate runs, so their examples validate (#11)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from opskit.actions import names
from opskit.errors import ExitCode
from tests.conftest import Invoke


def test_every_example_passes_validate(opskit: Invoke, tmp_path: Path) -> None:
    """A runbook made of every action's documented example is accepted by `opskit validate`."""
    docs = json.loads(opskit("actions", "--json", expect=ExitCode.OK).stdout)
    steps = [
        {"id": f"step-{n}", "uses": doc["name"], "with": doc["example"]}
        for n, doc in enumerate(docs)
    ]
    path = tmp_path / "examples.yaml"
    path.write_text(yaml.safe_dump({"name": "examples", "steps": steps}))

    opskit("validate", str(path), expect=ExitCode.OK)

    assert [d["name"] for d in docs] == names()


def test_one_action_shows_types_defaults_and_an_example(opskit: Invoke) -> None:
    """`opskit actions traffic.drained` lists quiet (duration, 15m) and timeout (1h) and a YAML example."""
    result = opskit("actions", "traffic.drained", expect=ExitCode.OK)

    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert rows["quiet"] == ["duration", "15m"]
    assert rows["timeout"] == ["duration", "1h"]
    assert "    uses: traffic.drained" in result.stdout


def test_json_has_each_parameter_spec(opskit: Invoke) -> None:
    """`--json` gives key, type, required and default for every parameter."""
    doc = json.loads(opskit("actions", "tcp.check", "--json", expect=ExitCode.OK).stdout)

    params = {p["key"]: p for p in doc["params"]}
    assert params["port"] == {
        "key": "port",
        "type": "whole number",
        "required": True,
        "default": None,
    }
    assert params["timeout"]["default"] == "3s"
    assert doc["kind"] == "probe"


def test_an_unknown_action_is_bad_input(opskit: Invoke) -> None:
    """A name that is not an action exits 2 with one line listing the known ones."""
    result = opskit("actions", "dns.chek", expect=ExitCode.BAD_INPUT)

    assert result.stderr.startswith("opskit: NAME: unknown action 'dns.chek' (known: dns.check")
