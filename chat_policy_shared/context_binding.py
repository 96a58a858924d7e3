"""A context variable bound to a value for the length of a `with` block.

A class rather than contextlib.contextmanager, whose generator costs about twice as much to
enter and leave: the policy service binds a few of these on every call.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any, Generic, TypeVar

Value = TypeVar("Value")


class Binding(Generic[Value]):
    """Within the `with` block, `variable` holds `value` (which `as` gives); after it, what it
    held before, however the block ends."""

    __slots__ = ("_token", "_value", "_variable")
    _token: Token[Any]

    def __init__(self, variable: ContextVar[Any], value: Value) -> None:
        self._variable = variable
        self._value = value

    def __enter__(self) -> Value:
        self._token = self._variable.set(self._value)
        return self._value

    def __exit__(self, *exc_info: object) -> None:
        self._variable.reset(self._token)
