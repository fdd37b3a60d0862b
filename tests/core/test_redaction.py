"""Secret values never leave opskit unmasked, in text or in nested JSON values."""

from __future__ import annotations

from opskit.redaction import Masker


def test_secret_values_are_masked_in_text_and_json() -> None:
    """Every occurrence of a registered secret becomes *** wherever it appears."""
    masker = Masker(["hunter2-pw"])
    masker.add("tsig-secret-value")

    assert masker.text("pw=hunter2-pw and hunter2-pw") == "pw=*** and ***"
    assert masker.value({"a": ["x tsig-secret-value y"], "n": 3}) == {"a": ["x *** y"], "n": 3}


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    """Overlapping secrets leave no fragment of the longer one behind."""
    masker = Masker(["abc", "abcdef"])

    assert masker.text("abcdef") == "***"
