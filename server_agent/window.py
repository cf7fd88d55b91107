"""Questions of one association gathered into one call per window: the PDP's post-filter decisions
(:mod:`server_agent.postfilter`) and a research view's pseudonyms (:mod:`server_agent.deidfind`).

A question waits at most ``window`` seconds, or until ``size`` are waiting; then one call answers them
all, in order. A failure of that call (one of ``errors``) reaches every waiter: none is left waiting
(fail closed). ``close`` cancels what waits when the association ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Q = TypeVar("Q")
A = TypeVar("A")


class Window(Generic[Q, A]):
    def __init__(self, answer: Callable[[list[Q]], Awaitable[list[A]]], window: float, size: int,
                 errors: tuple[type[BaseException], ...] = (Exception,)) -> None:
        self.answer, self.window, self.size, self.errors = answer, window, size, errors
        self._batch: list[tuple[Q, asyncio.Future[A]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def ask(self, question: Q) -> A:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[A] = loop.create_future()
        self._batch.append((question, future))
        if len(self._batch) >= self.size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch = self._batch, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)  # asyncio keeps only a weak reference to running tasks
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Q, asyncio.Future[A]]]) -> None:
        try:
            answers = await self.answer([question for question, _ in batch])
        except self.errors as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, future in self._batch:
            future.cancel()
        self._batch = []
        for task in list(self._tasks):
            task.cancel()


__all__ = ["Window"]
