"""Encoding of arguments, results and payloads: JSON via msgspec, decoded by annotation.

Values are stored as JSON (readable in SQL). A function's annotations type what
comes back: a step annotated ``-> datetime`` or ``-> MyStruct`` gets one back, on the
live path and on replay alike (the workflow always sees the decoded value, so live
and replayed runs see the same thing).
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any

import msgspec
from msgspec import Raw

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ArgsCodec", "decode_value", "encode_value"]

_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()

#: what msgspec raises for a value it cannot encode: an unsupported type, an int too
#: large, a value nested too deeply or containing itself (RecursionError)
_UNENCODABLE = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)


#: msgspec writes NaN and ±Infinity as JSON null: a value that would come back changed
_NON_FINITE = "it contains NaN or Infinity, which JSON cannot hold (it would come back as null)"


def _has_non_finite(value: Any) -> bool:
    """Whether `value` (as msgspec sees it) holds a float that is NaN or infinite."""
    stack = [msgspec.to_builtins(value)]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _check_finite(encoded: bytes, value: Any) -> None:
    # only a value that encoded to something with a null can hold NaN: the walk is rare
    if b"null" in encoded and _has_non_finite(value):
        raise ValueError(_NON_FINITE)


def encode_value(value: Any, *, what: str) -> Raw:
    """Encode `value`, or raise TypeError naming `what` (e.g. "step 'fetch' argument 1").

    NaN and Infinity are refused (JSON has no such numbers; msgspec would store null),
    so a value never comes back different from what was given."""
    try:
        encoded = _encoder.encode(value)
        _check_finite(encoded, value)
        return Raw(encoded)
    except _UNENCODABLE as exc:
        if isinstance(exc, RecursionError):
            reason = "it contains itself or is nested too deeply"
        elif str(exc) == _NON_FINITE:
            reason = _NON_FINITE
        elif isinstance(exc, TypeError | msgspec.EncodeError):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise TypeError(f"{what} cannot be stored: {reason}. Arguments and results must "
                        f"be values msgspec can encode (dict, list, str, int, float, bool, "
                        f"None, bytes, datetime, UUID, Decimal, Struct, dataclass, enum)"
                        ) from None


def decode_value(raw: Raw | bytes, type_: Any = Any) -> Any:
    if type_ is Any:
        return _any_decoder.decode(raw)
    return msgspec.json.decode(raw, type=type_, strict=False)


class ArgsCodec:
    """Encodes a call's arguments as ``{"args": [...], "kwargs": {...}}`` and decodes them
    back with the function's parameter annotations."""

    __slots__ = ("_hints", "_positional_hints", "name", "return_type")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.name = name
        params = inspect.signature(fn).parameters.values()
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable annotations: fall back to plain JSON values
            hints = {}
        self.return_type: Any = hints.pop("return", Any)
        if self.return_type in (None, type(None)):
            self.return_type = Any
        self._hints = hints
        positional = [p for p in params if p.kind in
                      (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        #: (index, type) of each annotated positional parameter
        self._positional_hints = [(i, hints[p.name]) for i, p in enumerate(positional)
                                  if p.name in hints]

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, kind: str) -> Raw:
        try:
            encoded = _encoder.encode({"args": args, "kwargs": kwargs})
            _check_finite(encoded, (args, kwargs))
            return Raw(encoded)
        except _UNENCODABLE:
            pass
        for i, arg in enumerate(args):
            encode_value(arg, what=f"{kind} {self.name!r}: argument {i + 1}")
        for key, arg in kwargs.items():
            encode_value(arg, what=f"{kind} {self.name!r}: argument {key!r}")
        raise TypeError(f"{kind} {self.name!r}: arguments cannot be stored")

    def decode(self, raw: Raw | bytes) -> tuple[list[Any], dict[str, Any]]:
        data = _any_decoder.decode(raw)
        args, kwargs = list(data.get("args", ())), dict(data.get("kwargs", {}))
        if self._hints:
            count = len(args)
            for i, type_ in self._positional_hints:
                if i < count:
                    args[i] = self._convert(args[i], type_)
            for key, value in kwargs.items():
                if key in self._hints:
                    kwargs[key] = self._convert(value, self._hints[key])
        return args, kwargs

    def decode_result(self, raw: Raw | bytes, kind: str) -> Any:
        """The stored result of `kind` ("step", "workflow") `self.name`, as its return
        annotation says; TypeError, naming both, if it is not of that type."""
        try:
            return decode_value(raw, self.return_type)
        except msgspec.ValidationError as exc:
            type_ = self.return_type
            shown = type_.__name__ if isinstance(type_, type) else str(type_)
            raise TypeError(f"{kind} {self.name!r} returned a value that does not match "
                            f"its return annotation ({shown}): {exc}") from None

    @staticmethod
    def _convert(value: Any, type_: Any) -> Any:
        try:
            return msgspec.convert(value, type_, strict=False)
        except (msgspec.ValidationError, TypeError):
            return value  # annotations are hints here, not a schema to enforce
