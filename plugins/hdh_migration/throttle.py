"""Egress throttling: each task's share of the bandwidth caps, and a token bucket that paces a stream.

A cap holds across processes without any coordination between them: it is divided evenly among
the tasks that may run under it at once (the pool's slots for the global cap, ``max_transfers``
for a domain's). The bucket is paid *before* each chunk is read or sent, so a paused stream holds
no data in memory beyond the chunk it is about to move.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

MB = 1_000_000


@dataclass(frozen=True)
class BandwidthShare:
    """Bytes per second one ``transfer_object`` task may move (each direction), and why."""

    bytes_per_s: float | None
    reasons: tuple[str, ...]

    def describe(self) -> str:
        if self.bytes_per_s is None:
            return "uncapped"
        return f"{self.bytes_per_s / MB:.1f} MB/s ({'; '.join(self.reasons)})"


def bandwidth_share(caps: list[tuple[str, float | None, int]]) -> BandwidthShare:
    """The tightest of several caps, each shared evenly by the tasks that may run under it at once.

    ``caps``: (name, MB/s or None, how many tasks at most run under it at once). A cap divided by
    its concurrency bound holds across processes without any coordination between them.
    """
    best, reasons = math.inf, []
    for name, mb_s, tasks in caps:
        if mb_s is None:
            continue
        share = mb_s * MB / max(1, tasks)
        reasons.append(f"{name} {mb_s:g} MB/s / {tasks} task(s)")
        best = min(best, share)
    return BandwidthShare(None if best is math.inf else best, tuple(reasons))


class TokenBucket:
    """Paces a stream to ``bytes_per_s`` (thread-safe: the parts of one upload share it).

    Callers ``acquire(n)`` before moving ``n`` bytes. The bucket starts empty, so from the first
    call on no more than ``bytes_per_s`` times the elapsed time is ever released. Credit accrues up
    to two of the largest chunks asked for (at least a second's worth), so the time a chunk spends
    on the wire, or a late wake-up on a busy machine, counts towards the next wait instead of
    adding to it; after an idle spell, that is also the largest burst.
    """

    MIN_CHUNK = 256 << 10

    def __init__(self, bytes_per_s: float, clock=time.monotonic, sleep=time.sleep):
        if bytes_per_s <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.bytes_per_s = bytes_per_s
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._capacity = 0.0
        self._last: float | None = None

    def chunk_size(self, preferred: int) -> int:
        """A read size that keeps the pace smooth: at most half a second's worth of bytes."""
        return max(min(preferred, int(self.bytes_per_s / 2)), min(preferred, self.MIN_CHUNK))

    def acquire(self, nbytes: int) -> float:
        """Wait until ``nbytes`` may be moved; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._capacity = max(self._capacity, 2.0 * nbytes, self.bytes_per_s)
            if self._last is not None:
                self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.bytes_per_s)
            self._last = now
            self._tokens -= nbytes
            wait = -self._tokens / self.bytes_per_s if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


def bucket_for(share: BandwidthShare) -> TokenBucket | None:
    return None if share.bytes_per_s is None else TokenBucket(share.bytes_per_s)
