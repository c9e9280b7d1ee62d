"""Async token buckets for request and token rate limits.

A bucket refills continuously at ``rate_per_minute / 60`` units per second up to
``capacity``. :meth:`AsyncTokenBucket.acquire` waits (first come, first served)
until the bucket holds ``min(amount, capacity)`` units and then takes
``amount``; a request larger than the whole bucket therefore still goes through
and leaves the bucket in debt, which later callers wait out. This keeps the
long-run rate exact without ever deadlocking on an oversized request.

Buckets must be used from a single event loop.
"""

from __future__ import annotations

import asyncio
import time


class AsyncTokenBucket:
    """A FIFO token bucket: ``await bucket.acquire(n)`` paces callers to the configured rate."""

    def __init__(self, rate_per_minute: float, capacity: float | None = None):
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.rate_per_s = rate_per_minute / 60.0
        # Default burst: one second's worth, and at least one unit.
        self.capacity = capacity if capacity is not None else max(1.0, self.rate_per_s)
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` units may be spent, then spend them."""
        async with self._lock:  # asyncio.Lock wakes waiters in FIFO order
            self._refill()
            needed = min(amount, self.capacity)
            while self._level < needed:
                await asyncio.sleep((needed - self._level) / self.rate_per_s)
                self._refill()
            self._level -= amount

    def adjust(self, delta: float) -> None:
        """Charge ``delta`` more units (or refund ``-delta``) once the true cost is known."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)


class RateLimits:
    """Optional request-per-minute and token-per-minute limits, applied together."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None):
        self.requests = AsyncTokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = AsyncTokenBucket(tokens_per_minute) if tokens_per_minute else None

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(estimated_tokens)

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token bucket with the usage the server reported."""
        if self.tokens is not None:
            self.tokens.adjust(actual_tokens - estimated_tokens)
