"""Pacing of the httpx pushes (Customer.io, Segment-spec, webhooks): a token bucket.

Hand-written because the base install has no rate limiter; the CRM pushes (extra ``crm``) use
pyrate-limiter, which also keeps a daily count across runs (:mod:`.crm.limits`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """At most ``rate`` requests per second on average, bursts up to ``burst``.

    ``clock`` and ``sleep`` are the monotonic clock and the sleep to use (injectable so a test can
    check the schedule without waiting).
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (requests per second)")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is there; returns the seconds slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            self._tokens -= 1  # may go negative: the wait above pays it back
        if wait > 0:
            self._sleep(wait)
        return wait
