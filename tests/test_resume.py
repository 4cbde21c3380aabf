"""The daemon's clock watch: a resume or a restore reseeds the pool and logs one line."""

from __future__ import annotations

import trio

from prngd.config import Settings
from prngd.pool import Pool
from prngd.server import Daemon


class Clocks:
    def __init__(self) -> None:
        self.mono = self.boot = 10**9
        self.real = 1_700_000_000 * 10**9

    def __call__(self):
        return self.mono, self.boot, self.real


async def test_resume_is_logged_once_and_reseeds(caplog, autojump_clock):
    caplog.set_level("INFO", "prngd")
    clocks = Clocks()
    pool = Pool(clocks=clocks, os_random=lambda n: b"\x01" * n)
    pool.add("seed", bytes(32), 256)
    daemon = Daemon(Settings(), pool=pool)

    async def suspend_then_restore():
        await trio.sleep(12)
        clocks.boot += 600 * 10**9  # ten minutes asleep
        await trio.sleep(12)
        clocks.real += 7 * 86400 * 10**9  # a week-old snapshot, restored and its clock corrected
        await trio.sleep(12)

    reseeds = pool.stats()["reseeds"]
    with trio.move_on_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon._clock_watch)
            await suspend_then_restore()
            nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if "reseeded with fresh kernel randomness" in r.getMessage()]
    assert len(lines) == 2
    assert "resumed after 600.0 s suspended" in lines[0]
    assert "wall clock jumped +604800.0 s" in lines[1]
    assert pool.stats()["reseeds"] == reseeds + 2 and pool.stats()["clock_reseeds"] == 2
