"""A bounded ring of recent points, for graphs: what the daemon did over the last day.

Every `history_interval` seconds (60 by default) one point is taken from the
status dict (`Daemon.status()`), never from the daemon's internals, so the
ring keeps working whatever the connection layer looks like:

    t               Unix time of the point
    entropy_bits    the pool's estimate at that moment
    requests_per_s  EGD requests a second since the previous point, by command
    connections     open EGD connections at that moment
    rejected        connections refused since the previous point
    reseeds         generator reseeds since the previous point

Rates come from counter deltas over the status' own uptime clock, so a late
sample gives a correct rate, not a spike.  A point is 44 packed bytes (struct;
about 88 with the bytes object and the deque's slot), so 1440 points (24 hours
at one a minute) hold about 125 KiB however busy the daemon is.  The admin socket serves the ring at /history
(docs/history.schema.json).
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections import deque
from typing import Callable

import trio

log = logging.getLogger(__name__)

CAPACITY = 1440  # points kept: 24 hours at the default interval
COMMANDS = ("entropy_level", "read_nonblocking", "read_blocking", "write_entropy", "get_pid")

# t (double), entropy_bits, connections, rejected, reseeds (uint32), then one rate per command (float32).
_POINT = struct.Struct(f"<d4I{len(COMMANDS)}f")
_U32 = 0xFFFFFFFF


def _count(value) -> int:
    """A counter or gauge from the status dict as a whole number (missing or bad: 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return int(value)


class History:
    """Points oldest first, at most `capacity` of them; the oldest go first."""

    def __init__(self, interval: float = 60.0, capacity: int = CAPACITY) -> None:
        self.interval = interval
        self.capacity = capacity
        self._points: deque[bytes] = deque(maxlen=capacity)
        self._last: dict | None = None  # the counters at the previous sample
        self.taken = 0  # points taken since start (the ring keeps the last `capacity`)

    def __len__(self) -> int:
        return len(self._points)

    @staticmethod
    def _counters(status: dict) -> dict:
        conns = status.get("connections") or {}
        requests = status.get("requests") or {}
        return {
            "uptime": float(status.get("uptime_s") or 0.0),
            "requests": [_count(requests.get(c)) for c in COMMANDS],
            "rejected": _count(conns.get("rejected")),
            "reseeds": _count(status.get("reseeds")),
        }

    def sample(self, status: dict, now: float | None = None) -> dict | None:
        """Take a point from `status`; the first call only sets the baseline (None).

        Returns the point taken, as /history shows it.
        """
        counters = self._counters(status)
        last, self._last = self._last, counters
        if last is None:
            return None
        elapsed = counters["uptime"] - last["uptime"]
        # Counters only grow; a drop (a restarted count) gives 0, not a negative rate.
        deltas = [max(0, new - old) for new, old in zip(counters["requests"], last["requests"])]
        rates = [d / elapsed if elapsed > 0 else 0.0 for d in deltas]
        conns = status.get("connections") or {}
        packed = _POINT.pack(
            time.time() if now is None else now,
            min(_U32, max(0, _count(status.get("entropy_bits")))),
            min(_U32, max(0, _count(conns.get("current")))),
            min(_U32, max(0, counters["rejected"] - last["rejected"])),
            min(_U32, max(0, counters["reseeds"] - last["reseeds"])),
            *rates)
        self._points.append(packed)
        self.taken += 1
        return self._unpack(packed)

    @staticmethod
    def _unpack(packed: bytes) -> dict:
        t, entropy, conns, rejected, reseeds, *rates = _POINT.unpack(packed)
        return {
            "t": round(t, 3),
            "entropy_bits": entropy,
            # float32 keeps ~7 digits: round off the noise it adds.
            "requests_per_s": {c: round(r, 3) for c, r in zip(COMMANDS, rates)},
            "connections": conns,
            "rejected": rejected,
            "reseeds": reseeds,
        }

    def points(self) -> list[dict]:
        return [self._unpack(p) for p in self._points]

    def as_dict(self, now: float | None = None) -> dict:
        """What /history answers (docs/history.schema.json)."""
        return {
            "now": round(time.time() if now is None else now, 3),
            "interval_s": self.interval,
            "capacity": self.capacity,
            "points": self.points(),
        }


async def sample_every(history: History, get_status: Callable[[], dict], get_interval: Callable[[], float]) -> None:
    """The sampler task: a baseline now, then a point every interval (re-read each time: SIGHUP may change it).

    A failure costs that point, never the daemon: this task shares its nursery.
    """
    failed = False
    while True:
        try:
            point = history.sample(get_status())
        except Exception:
            if not failed:  # once, not every interval
                log.exception("history: cannot take a point (later failures are not logged)")
            failed = True
        else:
            if point is not None:
                log.debug("history point %d: entropy %d bits, %.3g requests/s, %d connections", history.taken,
                          point["entropy_bits"], sum(point["requests_per_s"].values()), point["connections"])
        history.interval = get_interval()
        await trio.sleep(history.interval)
