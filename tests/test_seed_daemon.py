"""The seed file through the real daemon: replaced before the first byte, saved at stop,
whole after kill -9 at any moment, never served twice, disk faults survived."""

from __future__ import annotations

import os
import random
import shutil
import time


from conftest import egd_read
from prngd.identity import machine_identity
from prngd.seedfile import Seed, encode, parse, read_seed

NO_KERNEL = "[sources]\nkernel = no\n"
HERE = machine_identity().fingerprint  # what the daemon, on this machine, computes too


def new_seed(path, credit=True, mode=0o600) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(os.urandom(512), credit, HERE))
    os.chmod(path, mode)
    return path.read_bytes()


def save_failures(d) -> list[str]:
    return [line for line in d.lines if "save failed" in line]


def wait_until(predicate, timeout=20.0, what="condition"):
    """Poll for something the daemon does on its own schedule (log lines, a file change)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_replaced_before_first_byte_and_at_stop(start_daemon, tmp_path):
    path = tmp_path / "state" / "seed"
    original = new_seed(path)
    d = start_daemon(seed=path)
    # ready, nothing read yet: the old seed must already be gone
    at_start = path.read_bytes()
    assert at_start != original
    assert isinstance(parse(at_start), Seed)
    assert "loaded 588 bytes, credited 256 bits" in d.log()
    assert len(egd_read(d.socket, 32)) == 32
    assert path.read_bytes() == at_start  # no periodic save yet (default 10 minutes)
    assert d.stop() == 0
    at_stop = path.read_bytes()
    assert at_stop != at_start and parse(at_stop).credit
    assert [n for n in os.listdir(path.parent) if n != "seed"] == []


def test_copies_of_one_seed_serve_different_bytes(start_daemon, tmp_path):
    a, b = tmp_path / "a" / "seed", tmp_path / "b" / "seed"
    new_seed(a)
    b.parent.mkdir()
    shutil.copy2(a, b)
    assert a.read_bytes() == b.read_bytes()
    da = start_daemon(seed=a, config=NO_KERNEL)
    db = start_daemon(seed=b, config=NO_KERNEL)
    first_a, first_b = egd_read(da.socket, 64), egd_read(db.socket, 64)
    assert first_a != first_b
    assert a.read_bytes() != b.read_bytes()
    assert da.stop() == 0 and db.stop() == 0


def test_crash_at_random_moments(start_daemon, tmp_path):
    """50 rounds of start, read 64 bytes, kill -9; the seed stays whole and no stream repeats."""
    rng = random.Random()
    path = tmp_path / "state" / "seed"
    new_seed(path)
    firsts: list[bytes] = []
    previous = path.read_bytes()
    for rnd in range(50):
        fast = rnd % 2 == 1  # every other round saves every 10..50 ms, so some kills land mid-save
        config = NO_KERNEL if rnd % 3 == 0 else ""
        if fast:
            config += f"[seed]\nseed_save_interval = {rng.uniform(0.01, 0.05):.3f}\n"
        if rnd % 10 == 9:
            # killed during start-up, possibly while the seed is being replaced
            d = start_daemon(seed=path, config=config or None, ready=False)
            time.sleep(rng.uniform(0.0, 0.6))  # the random moment is the point here
            d.kill()
        else:
            d = start_daemon(seed=path, config=config or None)
            current = path.read_bytes()
            assert current != previous, f"round {rnd}: seed not replaced before serving"
            firsts.append(egd_read(d.socket, 64))
            time.sleep(rng.uniform(0.0, 0.1))
            d.kill()
        previous = path.read_bytes()
        seed = read_seed(str(path))  # whole: header, length and checksum all good
        assert len(seed.payload) == 512, f"round {rnd}"
    assert len(firsts) == 45 and len(set(firsts)) == len(firsts)
    # temp files of killed saves are cleaned at the next start: at most the last one remains
    leftovers = [n for n in os.listdir(path.parent) if n != "seed"]
    assert len(leftovers) <= 1, leftovers


def test_world_readable_seed_mixed_not_credited(start_daemon, tmp_path):
    path = tmp_path / "state" / "seed"
    new_seed(path, mode=0o644)
    d = start_daemon(seed=path)
    line = d.wait_for_line("not credited")
    assert "WARNING" in line and "0644" in line
    assert (path.stat().st_mode & 0o777) == 0o600  # the replacement is private again
    assert len(egd_read(d.socket, 16)) == 16
    assert d.stop() == 0


def test_unwritable_seed_directory_keeps_serving(start_daemon, tmp_path):
    """Root ignores mode bits, so the seed's directory is replaced by a regular file after start."""
    interval = 0.2
    directory = tmp_path / "state"
    path = directory / "seed"
    new_seed(path)
    d = start_daemon(seed=path, config=f"[seed]\nseed_save_interval = {interval}\n")
    ready = time.monotonic()
    shutil.rmtree(directory)
    directory.write_text("not a directory any more\n")
    wait_until(lambda: len(save_failures(d)) >= 4, what="four failing saves")
    seen = len(save_failures(d))
    elapsed = time.monotonic() - ready
    # one line per attempt, one attempt per interval
    assert seen <= elapsed / interval + 1, (seen, elapsed)
    assert all("ERROR" in line for line in save_failures(d))
    for _ in range(3):
        assert len(egd_read(d.socket, 32)) == 32
    before_stop = len(save_failures(d))
    assert d.stop() == 0
    assert len(save_failures(d)) in (before_stop + 1, before_stop + 2)  # the final save failed too, logged
    assert "Traceback" not in d.log()
