"""A fair readers-writer lock for one generation's in-memory index.

Readers (searches) share it; a writer holds it only for short exclusive steps (a chunk of
faiss adds, publishing a committed write, swapping in a rebuilt index). Fairness both ways:

- a writer that is waiting stops new readers from entering, so a stream of searches cannot
  starve it;
- when a writer releases, every reader that queued behind it enters before the next writer
  (a "reader turn"), so a stream of writers cannot starve searches either: a search waits for
  at most the one exclusive step in progress.

Uncontended, a read is one mutex round trip on entry and one on exit.
"""

from __future__ import annotations

import threading


class RWLock:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._readers_turn = False  # set when a writer leaves with readers queued behind it
        self.reader_waits = 0  # how many reads have had to wait, ever (writers size their steps by it)
        self._read = _Held(self.acquire_read, self.release_read)
        self._write = _Held(self.acquire_write, self.release_write)

    def read(self) -> "_Held":
        return self._read

    def write(self) -> "_Held":
        return self._write

    def _blocks_reader(self) -> bool:
        return self._writer or (self._writers_waiting > 0 and not self._readers_turn)

    def acquire_read(self) -> None:
        with self._mutex:
            if self._blocks_reader():
                self.reader_waits += 1
                self._readers_waiting += 1
                try:
                    while self._blocks_reader():
                        self._changed.wait()
                finally:
                    self._readers_waiting -= 1
                    if self._readers_waiting == 0:
                        self._readers_turn = False
                        self._changed.notify_all()  # writers wait for the turn to end
            self._readers += 1

    def release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if self._readers == 0 and self._writers_waiting:
                self._changed.notify_all()

    def acquire_write(self) -> None:
        with self._mutex:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers or self._readers_turn:
                    self._changed.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._mutex:
            self._writer = False
            self._readers_turn = self._readers_waiting > 0
            self._changed.notify_all()


class _Held:
    """``with`` support for one side of the lock (preallocated: entering costs no allocation)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire, release):
        self._acquire, self._release = acquire, release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc) -> None:
        self._release()
