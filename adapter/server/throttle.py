"""Failed-login throttle per client address.

Every wrong password costs a full scrypt check (~20 ms of CPU, by design), so a flood of
them from one address took the cores from everyone else (a legitimate client fell from 205
to 14 requests/s). After ``max_failures`` failed logins within ``window_s`` seconds, an
address's credentials are no longer checked until its oldest failure leaves the window:
it gets 429 with Retry-After instead, after a short ``hold`` (a flooding client that waits
for each answer, as HTTP clients do, then sends a few requests per second per connection
instead of thousands). Credentials verified before keep working from any address (the
authenticator's cache never reaches the throttle), and successes do not reset the count,
so one known password cannot be used to keep guessing another.

The address is the TCP peer: behind a reverse proxy every client shares the proxy's
address; throttle there and set ``limits.max_failed_logins: 0`` here.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Callable



class LoginThrottle:
    def __init__(self, max_failures: int = 10, window_s: float = 60.0, *, hold_s: float = 1.0,
                 max_addresses: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.max_failures = max_failures
        self.window_s = window_s
        self.hold_s = hold_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try a password again; None when it may now."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                return None
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if not times:
                del self._failures[address]
                return None
            if len(times) < self.max_failures:
                return None
            return self.window_s - (now - times[0])

    def failed(self, address: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            times = self._failures.pop(address, None) or deque(maxlen=self.max_failures)
            times.append(self._clock())
            self._failures[address] = times  # most recent last
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)  # forget the quietest addresses first
