"""The one place where requests to a storage run side by side.

Against object storage every request waits a round trip (20-80 ms to a cloud
region), so a restore of 100,000 documents made one after another takes hours.
Each storage owns one `Transfers`: at most `limit` requests queued or running
(its capabilities.connections: --s3-concurrency, AVIARY_S3_CONCURRENCY), and
at most `budget` bytes held for them (documents read ahead, parts waiting to
go up), whichever command asks.  It follows restic's connection-limited
backend: callers hand requests to it, it bounds them; no command runs a
thread pool of its own.

A limit of 1 runs every request in the caller's thread, at once: a folder on
a local disk gains nothing from more (its readers ask for more themselves).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor


class Budget:
    """Bytes that may be held at once.  A request larger than the whole budget is
    let through alone, so that any size makes progress."""

    def __init__(self, size: int):
        self.size, self.free = size, size
        self._changed = threading.Condition()

    def take(self, n: int, block: bool = True) -> bool:
        n = min(n, self.size)
        with self._changed:
            while self.free < n:
                if not block:
                    return False
                self._changed.wait()
            self.free -= n
            return True

    def give(self, n: int) -> None:
        with self._changed:
            self.free = min(self.size, self.free + min(n, self.size))
            self._changed.notify_all()


class Transfers:
    def __init__(self, limit: int, budget: int = 64 << 20, name: str = "storage"):
        self.limit = max(1, limit)
        self.budget = Budget(budget)
        self.name = name
        self._slots = threading.BoundedSemaphore(self.limit)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._futures: set[Future] = set()

    @property
    def concurrent(self) -> bool:
        return self.limit > 1

    def submit(self, fn: Callable, *args) -> Future:
        """fn(*args) on one of the workers; waits while `limit` requests are queued or running."""
        if not self.concurrent:
            return _done(fn, *args)
        self._slots.acquire()
        try:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.limit, thread_name_prefix=self.name)
                future = self._pool.submit(fn, *args)
                self._futures.add(future)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)
        self._slots.release()

    def prefetch(self, jobs: Iterable, fetch: Callable, cost: Callable[[object], int]) -> Iterator[tuple[object, Future]]:
        """(job, its done future) for every job, in order, fetch(job) running ahead of the
        caller as far as the limit and the byte budget allow.  A job's `cost` bytes are
        held from its start until the caller asks for the job after it (the caller is
        done with a result by then)."""
        jobs = iter(jobs)
        pending: deque = deque()  # (job, cost, future)
        following = next(jobs, _END)
        try:
            while True:
                while following is not _END and len(pending) < self.limit:
                    bytes_needed = cost(following)
                    # With nothing in flight the budget is the caller's alone: wait for it.
                    if not self.budget.take(bytes_needed, block=not pending):
                        break
                    pending.append((following, bytes_needed, self.submit(fetch, following)))
                    following = next(jobs, _END)
                if not pending:
                    return
                job, held, future = pending.popleft()
                _wait(future)
                try:
                    yield job, future
                finally:
                    self.budget.give(held)
        finally:
            for _, held, future in pending:
                future.cancel()
                _wait(future)
                self.budget.give(held)

    def each(self, fn: Callable, items: Iterable) -> None:
        """fn(item) for every item, side by side; the first error is raised once the
        requests under way have ended (those not started are dropped)."""
        pending: deque = deque()
        try:
            for item in items:
                pending.append(self.submit(fn, item))
                while pending and pending[0].done():
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            for future in pending:
                _wait(future)
            raise

    def cancel(self) -> None:
        """Drop the requests not started, and wait for those under way to end."""
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            future.cancel()
        for future in futures:
            _wait(future)

    def close(self) -> None:
        self.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


_END = object()


def _done(fn: Callable, *args) -> Future:
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as error:  # noqa: BLE001 - handed to whoever reads the result
        if not isinstance(error, Exception):
            raise
        future.set_exception(error)
    return future


def _wait(future: Future) -> None:
    """Wait for `future` to end, whatever its outcome (its result is read elsewhere)."""
    try:
        future.exception()
    except CancelledError:
        pass
