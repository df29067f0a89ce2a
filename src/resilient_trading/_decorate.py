"""The one decorator shape of the breaker and the retry policy.

A coroutine function stays a coroutine function (each call goes through ``call_async``); any
other function is wrapped by ``call``. Both keep the function's name, docstring and signature.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["guard_decorator"]

P = ParamSpec("P")
T = TypeVar("T")


def guard_decorator(
    fn: Callable[P, T],
    call: Callable[..., T],
    call_async: Callable[..., Awaitable[Any]],
) -> Callable[P, T]:
    """``fn`` wrapped by ``call`` (or by ``call_async`` when ``fn`` is a coroutine function)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await call_async(fn, *args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return call(fn, *args, **kwargs)

    return wrapper
