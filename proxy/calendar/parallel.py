"""Calendar requests that do not depend on each other, sent at once: a tool's answer waits for the slowest of
them, not for their sum (docs/booking.md lists each tool's requests in sequence)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import anyio

__all__ = ["both", "every"]

A = TypeVar("A")
B = TypeVar("B")


async def every(requests: Sequence[Callable[[], Awaitable[A]]]) -> list[A]:
    """The answers of `requests` (each a function making one), in order. The first failure cancels the others
    and is raised as itself (not as an exception group), so a caller's `except CalendarError` still sees it.
    Functions, not awaitables: a request cancelled before it started is then never made, not left unawaited."""
    answers: list[Any] = [None] * len(requests)

    async def run(index: int, request: Callable[[], Awaitable[A]]) -> None:
        answers[index] = await request()

    try:
        async with anyio.create_task_group() as group:
            for index, request in enumerate(requests):
                group.start_soon(run, index, request)
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return cast(list[A], answers)


async def both(first: Callable[[], Awaitable[A]], second: Callable[[], Awaitable[B]]) -> tuple[A, B]:
    """The answers of two requests of different kinds, sent at once (see `every`)."""
    a, b = await every([cast(Callable[[], Awaitable[Any]], first), cast(Callable[[], Awaitable[Any]], second)])
    return cast(A, a), cast(B, b)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error
