"""A readers-writer lock: many predictions at once, or one training epoch.

Design decisions:
- Phase-fair: a writer that arrives waits for the readers inside, and
  readers that arrive while a writer waits or writes go in together as
  soon as it leaves, before the next writer. So neither a stream of
  predictions nor a fit that takes the lock once per epoch can starve
  the other.
- The thread that holds the write lock may also read (training
  validates inside its epochs). Otherwise the lock is not reentrant: a
  reader must not read again before it is done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0  # readers inside
        self._writer: int | None = None  # the writing thread's ident
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._admitted = 0  # readers let in by the last writer, not yet inside
        self._phase = 0  # counts the writers that have left
        # NOTE: a plain object rather than a @contextmanager generator,
        # which would cost a microsecond per prediction.
        self._reading = _Reading(self)

    def read(self) -> _Reading:
        """A context manager holding the lock for reading."""
        return self._reading

    def _acquire_read(self) -> None:
        if self._writer == threading.get_ident():
            return
        # The common case, no writer about, without the Condition wrapper.
        mutex = self._mutex
        mutex.acquire()
        if self._writer is None and not self._writers_waiting:
            self._readers += 1
            mutex.release()
            return
        mutex.release()
        with self._cond:
            if self._writer is not None or self._writers_waiting:
                self._readers_waiting += 1
                phase = self._phase
                while self._phase == phase:
                    self._cond.wait()
                self._admitted -= 1
            self._readers += 1

    def _release_read(self) -> None:
        # The writer reading inside its own write lock never counted in.
        if self._writer == threading.get_ident():
            return
        with self._mutex:
            self._readers -= 1
            # Only a writer waits for the readers to leave.
            if self._readers == 0 and self._writers_waiting:
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer is not None or self._readers or self._admitted:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                # Every reader that waited goes in before the next writer.
                self._admitted += self._readers_waiting
                self._readers_waiting = 0
                self._phase += 1
                self._cond.notify_all()


class _Reading:
    """`with lock.read():` — enters and leaves the read side."""

    __slots__ = ("_lock",)

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._acquire_read()

    def __exit__(self, *exc: object) -> None:
        self._lock._release_read()
