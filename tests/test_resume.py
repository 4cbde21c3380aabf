"""The daemon's clock watch: a resume or a restore reseeds the pool and logs one line."""

from __future__ import annotations

import trio

from prngd import seedfile, tasks
from prngd.config import Settings
from prngd.identity import Identity
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
            nursery.start_soon(tasks.clock_watch, daemon)
            await suspend_then_restore()
            nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if "reseeded with fresh kernel randomness" in r.getMessage()]
    assert len(lines) == 2
    assert "resumed after 600.0 s suspended" in lines[0]
    assert "wall clock jumped +604800.0 s" in lines[1]
    assert pool.stats()["reseeds"] == reseeds + 2 and pool.stats()["clock_reseeds"] == 2
    assert daemon.status()["restore_generation"] == 2  # what feed-kernel follows


async def test_a_restore_replaces_the_seed_file_at_once(tmp_path, autojump_clock):
    """Copies of a restored VM share the seed file on its disk too: each rewrites it from its reseeded pool."""
    clocks = Clocks()
    pool = Pool(clocks=clocks)
    pool.add("seed", bytes(32), 256)
    path = tmp_path / "seed"
    daemon = Daemon(Settings(seedfile=str(path)), pool=pool)
    daemon.seed_state = seedfile.load_and_replace(str(path), pool, Identity(b"\x33" * 32))
    on_disk = path.read_bytes()
    saves = daemon.seed_state.saves
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tasks.clock_watch, daemon)
        await trio.sleep(12)
        assert path.read_bytes() == on_disk  # nothing happened: no save
        clocks.real += 86400 * 10**9
        await trio.sleep(6)
        nursery.cancel_scope.cancel()
    assert daemon.seed_state.saves == saves + 1
    assert path.read_bytes() != on_disk and seedfile.parse(path.read_bytes()).fingerprint == b"\x33" * 32
