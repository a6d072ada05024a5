"""A full disk or a read-only data directory: told apart from bugs, and reported by /health.

``storage_failure(exc)`` turns the OS's and SQLite's ways of saying "no space" (ENOSPC,
EDQUOT, EFBIG, SQLITE_FULL) into a 507 and "cannot write here" (EROFS, EACCES, EPERM,
SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_IOERR) into a 503, each with a clear message instead
of a bare 500. Writes are transactional (SQLite) or write-ahead (the push journal), so a
refused write leaves nothing half-done.

``StorageHealth`` remembers the last such failure and, every ``recheck_s`` seconds at most,
writes, syncs and removes a small probe file in each data directory: ``/health`` says
``degraded`` (searches still work) while either says the service cannot write, and ``ok``
again once it can.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from adapter.errors import AdapterError, InsufficientStorageError, StorageUnavailableError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
_SQLITE_NO_SPACE = {13}  # SQLITE_FULL
_SQLITE_NOT_WRITABLE = {8, 10, 14}  # SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN


def storage_failure(exc: BaseException) -> AdapterError | None:
    """The 507/503 error for a storage failure, or None for anything else."""
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary result code
        if code in _SQLITE_NO_SPACE:
            return InsufficientStorageError("the data directory's disk is full: the write was not made; "
                                            "free space and retry", "storage")
        if code in _SQLITE_NOT_WRITABLE:
            return StorageUnavailableError(f"the data directory cannot be written ({exc}): the write was not "
                                           "made", "storage")
        return None
    if isinstance(exc, OSError):
        if exc.errno in _NO_SPACE:
            return InsufficientStorageError("the data directory's disk is full: the write was not made; "
                                            "free space and retry", "storage")
        if exc.errno in _NOT_WRITABLE:
            return StorageUnavailableError(f"the data directory refused the operation ({exc.strerror}): the "
                                           "write was not made", "storage")
    return None


class StorageHealth:
    def __init__(self, directories: Iterable[Path], *, recheck_s: float = 5.0):
        self.directories = [Path(d) for d in dict.fromkeys(directories)]
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._since = 0.0  # when _problem was last seen (a failed write or probe)
        self._probed = float("-inf")

    def failed(self, err: AdapterError) -> None:
        with self._lock:
            self._problem, self._since = err.message, time.monotonic()

    def problem(self) -> str | None:
        """Why the service cannot write now, or None. Probes at most every recheck_s."""
        now = time.monotonic()
        with self._lock:
            if self._problem is not None and now - self._since < self.recheck_s:
                return self._problem
            if now - self._probed < self.recheck_s:
                return self._problem
            self._probed = now
        found = self._probe()
        with self._lock:
            self._problem, self._since = found, now
            return found

    def _probe(self) -> str | None:
        for directory in self.directories:
            path = directory / f".write-probe-{os.getpid()}-{threading.get_ident()}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, b"probe")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.unlink(path)
            except OSError as exc:
                err = storage_failure(exc)
                return err.message if err is not None else f"the data directory cannot be written ({exc.strerror})"
        return None
