"""A failure's stored traceback is Python's own text (`traceback.format_exception`),
carets and chained exceptions included, however often the same lines fail: frames
are formatted through a cache, as the same step fails at the same line run after run."""

from __future__ import annotations

import traceback

import pytest

from worldflow.core.steps import _FORMATTED_FRAMES, _traceback_text


def _lookup(key: str) -> int:
    table = {"a": 1}
    return table[key] * 2


def _wrapped(key: str) -> int:
    try:
        return _lookup(key)
    except KeyError as exc:
        raise ValueError(f"no value for {key!r}") from exc


def _caught(fn: object, *args: object) -> BaseException:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


@pytest.mark.parametrize("make", [
    lambda: _caught(_lookup, "b"),
    lambda: _caught(_wrapped, "c"),
    lambda: ExceptionGroup("two", [_caught(_lookup, "x"), _caught(_wrapped, "y")]),
], ids=["plain", "chained", "group"])
def test_the_text_is_pythons_own_every_time(make: object) -> None:
    for _ in range(3):  # the first time fills the cache, the others read it
        exc = make()  # type: ignore[operator]
        assert _traceback_text(exc) == "".join(traceback.format_exception(exc))
    assert _FORMATTED_FRAMES  # the frames went through the cache


def test_a_different_failure_at_the_same_line_keeps_its_own_message() -> None:
    first, second = _caught(_lookup, "b"), _caught(_lookup, "zz")
    first_text, second_text = _traceback_text(first), _traceback_text(second)
    assert first_text is not None and second_text is not None
    assert "KeyError: 'b'" in first_text and "KeyError: 'zz'" in second_text
    assert "return table[key] * 2" in first_text and "return table[key] * 2" in second_text
