"""Token bucket used for per-connection message rates and error budgets."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``capacity`` saved up.

    The clock is injectable so tests can drive it without sleeping.
    """

    __slots__ = ("_clock", "_stamp", "capacity", "rate", "tokens")

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = float(capacity)
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self._stamp = now

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available; ``False`` means the caller is over the limit."""
        self._refill()
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be available."""
        self._refill()
        missing = cost - self.tokens
        return max(0.0, missing / self.rate)
