"""An action's `with:` values are checked before anything runs, naming the key that is wrong."""

from __future__ import annotations

import pytest

from opskit.actions.params import ParamError, Params


def test_typed_getters_read_what_runbooks_write() -> None:
    """Strings, numbers, durations and lists come out in the types actions need."""
    p = Params({"url": "http://x", "n": "3", "t": "1m", "addrs": "1.2.3.4, 5.6.7.8", "f": "yes"})

    assert p.text("url") == "http://x"
    assert p.integer("n") == 3
    assert p.seconds("t") == 60.0
    assert p.text_list("addrs") == ["1.2.3.4", "5.6.7.8"]
    assert p.flag("f") is True
    p.finish()


def test_unknown_and_missing_keys_are_named() -> None:
    """A typo in `with:` is an error naming the key, not silently ignored."""
    p = Params({"urll": "http://x"})
    with pytest.raises(ParamError, match=r"with\.url: is required"):
        p.text("url")
    with pytest.raises(ParamError) as err:
        p.finish()
    assert err.value.key == "urll"


def test_deferred_values_pass_validation() -> None:
    """A template that only a run can fill is accepted at validate time."""
    p = Params({"timeout": "{{ t }}"}, deferred=frozenset({"timeout"}))

    assert p.seconds("timeout") == 0.0
    p.finish()
