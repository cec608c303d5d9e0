"""Pacing and stalls: the two ways the gateway slows a client down.

* :class:`TokenBucket` is TWS's message pacing: a client may send ``rate`` messages per second (bursts up to
  ``rate``); a message beyond that is refused with error 100 and not acted on.
* :class:`StallGate` freezes everything the gateway writes to its clients, as a hung gateway would: requests
  are still read and acted on, but no answer leaves until the gate opens again (after N seconds, or when
  released). Messages queued meanwhile go out in order.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``rate`` tokens per second, at most ``rate`` stored; one message costs one token.

    >>> bucket = TokenBucket(2, now=0.0)
    >>> [bucket.take(now=0.0) for _ in range(3)], bucket.take(now=0.5)
    ([True, True, False], True)
    """

    def __init__(self, rate: float, *, now: float | None = None) -> None:
        self.rate = float(rate)
        self.tokens = float(rate)
        self.stamp = time.monotonic() if now is None else now

    def take(self, *, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class StallGate:
    """Open by default; :meth:`stall` closes it for ``seconds`` (None = until :meth:`release`).

    Use on the gateway's event loop only (the gateway's thread-safe methods hop onto it).
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def stalled(self) -> bool:
        return not self._open.is_set()

    def stall(self, seconds: float | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._open.clear()
        if seconds is not None:
            self._timer = asyncio.get_running_loop().call_later(max(seconds, 0.0), self.release)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()
