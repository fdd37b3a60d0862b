"""TSIG key files as BIND writes them, every algorithm, against knot (issue #12, point 8)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from opskit.actions import load
from opskit.actions.params import ParamError, Params
from opskit.errors import ExitCode
from tests.conftest import Invoke
from tests.dns.context import PlainContext
from tests.servers.dns_case import CaseLab, TsigSpec, case_lab, zone_text

pytestmark = pytest.mark.dns

ALGORITHMS = ("hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")


def _secret(algorithm: str) -> str:
    return base64.b64encode(f"opskit-lab-only-{algorithm}-key".encode()).decode()


KEYS = [TsigSpec(f"k-{a}", a, _secret(a)) for a in ALGORITHMS]


@pytest.fixture(scope="module")
def knot_keys() -> Iterator[CaseLab]:
    """knot serving tsig.test, accepting updates signed with a key of each HMAC algorithm."""
    with case_lab(
        knot={"tsig.test": zone_text("tsig.test", "h 300 IN A 192.0.2.1")}, keys=KEYS
    ) as running:
        yield running


def _key_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "update.key"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _update(opskit: Invoke, lab: CaseLab, key: Path, value: str, expect: int) -> str:
    result = opskit(
        "dns",
        "update",
        "--server",
        lab.knot,
        "--zone",
        "tsig.test",
        "--name",
        "h.tsig.test",
        "--set",
        value,
        "--tsig-key-file",
        str(key),
        expect=expect,
    )
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("written", "knot_algorithm"),
    [
        ("hmac-md5", "hmac-md5"),
        ("hmac-md5.sig-alg.reg.int", "hmac-md5"),
        ("HMAC-MD5.SIG-ALG.REG.INT.", "hmac-md5"),
        ("hmac-sha1", "hmac-sha1"),
        ("hmac-sha224", "hmac-sha224"),
        ("hmac-sha256", "hmac-sha256"),
        ("hmac-sha384", "hmac-sha384"),
        ("hmac-sha512", "hmac-sha512"),
    ],
)
def test_every_bind_algorithm_signs_an_update_knot_accepts(
    opskit: Invoke, knot_keys: CaseLab, tmp_path: Path, written: str, knot_algorithm: str
) -> None:
    """A key file naming any HMAC algorithm, short or long form, signs an update knot accepts."""
    key = _key_file(
        tmp_path,
        f'key "k-{knot_algorithm}" {{\n\talgorithm {written};\n'
        f'\tsecret "{_secret(knot_algorithm)}";\n}};\n',
    )
    value = f"192.0.2.{ALGORITHMS.index(knot_algorithm) + 10}"

    out = _update(opskit, knot_keys, key, value, ExitCode.OK)

    assert "VERIFIED" in out


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('key "k" {\n\talgorithm hmac-sha999;\n\tsecret "c2VjcmV0";\n};\n', (":2:", "hmac-sha999")),
        ('key "k" {\n\talgorithm hmac-sha256\n\tsecret "c2VjcmV0";\n};\n', (":3:", "expected ';'")),
        ('key "k" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0"\n};\n', (":4:", "expected ';'")),
        ('# comment\nkey "k" {\n  algorithm hmac-sha256;\n};\n', (":2:", "no secret")),
        ('key "k" {\n\talgorithm hmac-sha256;\n\tsecret "%%%";\n};\n', (":3:", "base64")),
        ('key "k" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0";\n', (":3:", "expected '}'")),
    ],
)
def test_a_broken_key_file_is_one_line_naming_file_and_line(
    opskit: Invoke, knot_keys: CaseLab, tmp_path: Path, text: str, said: tuple[str, str]
) -> None:
    """An unknown algorithm or a syntax error exits 2 with one line FILE:LINE: what is wrong."""
    key = _key_file(tmp_path, text)
    where, what = said

    result = opskit(
        "dns",
        "update",
        "--server",
        knot_keys.knot,
        "--zone",
        "tsig.test",
        "--name",
        "h.tsig.test",
        "--set",
        "192.0.2.99",
        "--tsig-key-file",
        str(key),
        expect=ExitCode.BAD_INPUT,
    )

    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{key}{where}" in result.stderr
    assert what in result.stderr
    assert "c2VjcmV0" not in result.stderr


def test_runbook_secret_with_a_short_algorithm_name_signs(
    knot_keys: CaseLab, tmp_path: Path
) -> None:
    """dns.update with tsig_secret and `tsig_algorithm: hmac-md5` signs an update knot accepts."""
    action = load("dns.update").from_params(
        Params(
            {
                "server": knot_keys.knot,
                "zone": "tsig.test",
                "name": "h.tsig.test",
                "set": ["192.0.2.40"],
                "tsig_name": "k-hmac-md5",
                "tsig_algorithm": "hmac-md5",
                "tsig_secret": _secret("hmac-md5"),
            }
        )
    )

    result = action.run(PlainContext(state_dir=tmp_path))

    assert result.ok, result.summary


def test_unknown_runbook_algorithm_is_refused_at_load_time() -> None:
    """A `tsig_algorithm` no server knows is reported with its key before anything runs."""
    with pytest.raises(ParamError) as caught:
        load("dns.update").from_params(
            Params(
                {
                    "server": "127.0.0.1:53",
                    "zone": "z.test",
                    "name": "a.z.test",
                    "set": ["192.0.2.1"],
                    "tsig_name": "k",
                    "tsig_algorithm": "hmac-sha999",
                    "tsig_secret": "c2VjcmV0",
                }
            )
        )

    assert caught.value.key == "tsig_algorithm"
