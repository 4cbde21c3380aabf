"""prngd.exchange: one update, its refusals and faults, and real flock(2) contention between processes."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prngd import exchange
from prngd.exchange import EXCHANGE_SIZE, update

ROOT = Path(__file__).resolve().parent.parent


class FakePool:
    def __init__(self, seeded: bool = True):
        self.seeded = seeded
        self.adds: list[tuple[str, bytes, float]] = []
        self.outputs: list[bytes] = []

    def add(self, source, data, bits):
        self.adds.append((source, bytes(data), bits))

    def read(self, n, *, allow_unseeded=False):
        assert self.seeded or allow_unseeded
        out = os.urandom(n)
        self.outputs.append(out)
        return out


def ex_records(caplog):
    return [r for r in caplog.records if r.name == "prngd.exchange"]


def test_creates_file_0600_with_fresh_bytes(tmp_path):
    path = tmp_path / "prng_exch"
    pool = FakePool()
    assert update(str(path), pool)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == pool.outputs[-1] and len(pool.outputs[-1]) == EXCHANGE_SIZE
    assert pool.adds == []  # nothing to mix in an empty new file


def test_mixes_uncredited_and_rewrites(tmp_path):
    path = tmp_path / "prng_exch"
    old = os.urandom(EXCHANGE_SIZE)
    path.write_bytes(old)
    pool = FakePool()
    assert update(str(path), pool)
    assert pool.adds == [("exchange", old, 0)]
    assert path.read_bytes() == pool.outputs[-1] != old


@pytest.mark.parametrize("size", [10, 1023, 1025, 5000])
def test_file_of_another_size_is_not_an_exchange_file_and_left_alone(tmp_path, size):
    # Neither prngd nor tlsmgr writes anything but 1024 bytes: a file of another size is someone else's.
    path = tmp_path / "prng_exch"
    path.write_bytes(b"o" * size)
    pool = FakePool()
    assert update(str(path), pool) is False
    assert path.read_bytes() == b"o" * size and pool.adds == [] and pool.outputs == []
    assert f"holds {size} bytes" in exchange.identify(str(path))


def test_identify_accepts_absent_empty_and_1024_bytes(tmp_path):
    path = tmp_path / "prng_exch"
    assert exchange.identify(str(path)) is None
    path.write_bytes(b"")
    assert exchange.identify(str(path)) is None
    path.write_bytes(b"x" * EXCHANGE_SIZE)
    assert exchange.identify(str(path)) is None
    assert "does not exist" in exchange.identify(str(tmp_path / "nodir" / "prng_exch"))


def test_unseeded_pool_mixes_but_does_not_write(tmp_path):
    path = tmp_path / "prng_exch"
    old = b"k" * EXCHANGE_SIZE
    path.write_bytes(old)
    pool = FakePool(seeded=False)
    assert update(str(path), pool)
    assert pool.adds == [("exchange", old, 0)] and pool.outputs == [] and path.read_bytes() == old


def test_symlink_refused(tmp_path, caplog):
    target = tmp_path / "target"
    target.write_bytes(b"t" * 100)
    path = tmp_path / "prng_exch"
    path.symlink_to(target)
    pool = FakePool()
    assert update(str(path), pool) is False
    assert target.read_bytes() == b"t" * 100 and pool.adds == []
    recs = ex_records(caplog)
    assert len(recs) == 1 and "symbolic link" in recs[0].getMessage()


def test_hard_link_refused(tmp_path):
    target = tmp_path / "precious"
    target.write_bytes(b"p" * 100)
    path = tmp_path / "prng_exch"
    os.link(target, path)
    assert update(str(path), FakePool()) is False
    assert target.read_bytes() == b"p" * 100


def test_fifo_refused_without_hanging(tmp_path):
    path = tmp_path / "prng_exch"
    os.mkfifo(path, 0o600)
    assert update(str(path), FakePool()) is False


def test_held_lock_times_out_logged_once(tmp_path, caplog):
    path = tmp_path / "prng_exch"
    path.write_bytes(b"h" * EXCHANGE_SIZE)
    with open(path, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another open file description: conflicts like another process
        pool = FakePool()
        assert update(str(path), pool, lock_timeout=0.05) is False
        assert pool.adds == [] and path.read_bytes() == b"h" * EXCHANGE_SIZE
        assert len(ex_records(caplog)) == 1 and "locked" in ex_records(caplog)[0].getMessage()
    assert update(str(path), pool)  # free again


@pytest.mark.parametrize("where,err", [("pwrite", errno.ENOSPC), ("fsync", errno.EIO), ("open", errno.EROFS)])
def test_os_errors_return_false_logged_once(tmp_path, monkeypatch, caplog, where, err):
    path = tmp_path / "prng_exch"
    path.write_bytes(b"e" * EXCHANGE_SIZE)

    def failing(*a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(exchange.os, where, failing)
    for n in (1, 2):
        assert update(str(path), FakePool()) is False
        assert len(ex_records(caplog)) == n and os.strerror(err) in ex_records(caplog)[-1].getMessage()
    monkeypatch.undo()
    assert update(str(path), FakePool())
    # the lock was released after the failures
    with open(path, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_missing_directory_is_an_error_not_an_exception(tmp_path):
    assert update(str(tmp_path / "no" / "such" / "prng_exch"), FakePool()) is False


# ---------------------------------------------------------------- contention
#
# Every updater appends one line to a side log while it holds the lock:
#     WHO SEQ sha256(block it read) sha256(block it wrote) KIND-OF-BLOCK-READ
# Because the line is written under the same flock as the read and the write,
# the log's order is the lock order, and with no lost update and no torn
# write each line's "read" equals the previous line's "wrote" (one chain from
# the initial content to the final file).  A lost update (two updaters reading
# the same block) breaks the chain; a torn block (half of one write, half of
# another) matches no hash at all.  `check_chain` is tested on such logs below.

CHILD = textwrap.dedent(r"""
    import fcntl, hashlib, os, random, sys, time
    role, path, logpath, who, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    H = lambda b: hashlib.sha256(b).hexdigest()
    logfd = os.open(logpath, os.O_WRONLY | os.O_APPEND)

    def kind(block):
        if len(block) == 1024 and block == block[:8] * 128:
            return "uniform"
        return "other"

    def record(seq, old, new):
        os.write(logfd, f"{who} {seq} {H(old)} {H(new)} {kind(old)}\n".encode())

    if role == "prngd":
        from prngd.exchange import update

        class RecordingPool:  # called by update() while it holds the lock
            seeded = True
            def add(self, source, data, bits):
                assert bits == 0
                self.old = data
            def read(self, n, allow_unseeded=False):
                new = os.urandom(n)
                record(self.seq, self.old, new)
                return new

        pool = RecordingPool()
        print("ready", flush=True); sys.stdin.readline()
        for seq in range(rounds):
            pool.seq = seq
            if not update(path, pool, lock_timeout=30):
                sys.exit("update failed")
            time.sleep(random.uniform(0, 0.001))  # outside the lock: let the other side in
    else:  # a foreign writer (think tlsmgr): same flock, a uniform counter block, written in two halves
        fd = os.open(path, os.O_RDWR)
        print("ready", flush=True); sys.stdin.readline()
        for seq in range(rounds):
            fcntl.flock(fd, fcntl.LOCK_EX)
            old = os.pread(fd, 4096, 0)
            new = (int(who[1:]) << 32 | seq).to_bytes(8, "big") * 128
            record(seq, old, new)
            os.pwrite(fd, new[:512], 0)
            os.sched_yield()  # widen the window in which an unlocked reader would see half of it
            os.pwrite(fd, new[512:], 512)
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(random.uniform(0, 0.001))
""")


def check_chain(lines: list[str], initial: bytes, final: bytes, expected: dict[str, int]) -> None:
    """Raise AssertionError unless the log is one unbroken chain from `initial` to `final`."""
    H = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    prev = H(initial)
    seqs: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        who, seq, read, wrote, _kind = line.split()
        assert read == prev, f"line {i} ({who} #{seq}) read a block nobody wrote last: lost update or torn write"
        seqs.setdefault(who, []).append(int(seq))
        prev = wrote
    assert prev == H(final), "the file does not hold the last recorded write"
    assert {w: s for w, s in seqs.items()} == {w: list(range(n)) for w, n in expected.items()}


def run_contention(tmp_path, roles: dict[str, str], rounds: int) -> None:
    path = tmp_path / "prng_exch"
    initial = os.urandom(EXCHANGE_SIZE)
    path.write_bytes(initial)
    os.chmod(path, 0o600)
    logpath = tmp_path / "side.log"
    logpath.write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, role, str(path), str(logpath), who, str(rounds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
             for who, role in roles.items()]
    try:
        for p in procs:  # all started and waiting: then release them together
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.wait(60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    lines = logpath.read_text().splitlines()
    assert len(lines) == rounds * len(roles)
    check_chain(lines, initial, path.read_bytes(), {who: rounds for who in roles})
    # every block a prngd wrote was read whole by whoever came next; every foreign block read was uniform
    foreign_out = {hashlib.sha256((int(w[1:]) << 32 | s).to_bytes(8, "big") * 128).hexdigest()
                   for w, r in roles.items() if r == "writer" for s in range(rounds)}
    for prev, line in zip(lines, lines[1:]):
        if prev.split()[3] in foreign_out:
            assert line.split()[4] == "uniform"
    # the updates really interleaved (otherwise this would prove nothing)
    owners = [line.split()[0] for line in lines]
    switches = sum(a != b for a, b in zip(owners, owners[1:]))
    assert switches >= 10, f"only {switches} hand-overs between processes"
    assert path.stat().st_size == EXCHANGE_SIZE


def test_contention_prngd_and_foreign_writer(tmp_path):
    run_contention(tmp_path, {"p1": "prngd", "w2": "writer"}, rounds=200)


def test_contention_two_prngd_updaters(tmp_path):
    run_contention(tmp_path, {"p1": "prngd", "p2": "prngd"}, rounds=200)


def test_check_chain_catches_lost_update_and_torn_write():
    H = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    a, b, c = b"A" * 1024, b"B" * 1024, b"C" * 1024
    good = [f"p1 0 {H(a)} {H(b)} uniform", f"w2 0 {H(b)} {H(c)} uniform"]
    check_chain(good, a, c, {"p1": 1, "w2": 1})
    lost = [f"p1 0 {H(a)} {H(b)} uniform", f"w2 0 {H(a)} {H(c)} uniform"]  # both read A: B was lost
    with pytest.raises(AssertionError, match="lost update"):
        check_chain(lost, a, c, {"p1": 1, "w2": 1})
    torn = b[:512] + c[512:]
    torn_log = [f"p1 0 {H(a)} {H(b)} uniform", f"w2 0 {H(torn)} {H(c)} other"]
    with pytest.raises(AssertionError, match="torn"):
        check_chain(torn_log, a, c, {"p1": 1, "w2": 1})
    with pytest.raises(AssertionError, match="last recorded write"):
        check_chain(good, a, b, {"p1": 1, "w2": 1})


def test_state_records_updates_and_the_last_error(tmp_path):
    from prngd.exchange import ExchangeState

    path = str(tmp_path / "prng_exch")
    state = ExchangeState(path)
    pool = FakePool()
    assert update(path, pool, state) and update(path, pool, state)
    assert (state.updates, state.failures, state.last_error) == (2, 0, None)
    os.unlink(path)
    os.symlink(str(tmp_path / "elsewhere"), path)  # refused: never followed
    assert not update(path, pool, state)
    assert (state.updates, state.failures) == (2, 1)
    assert "symbolic link" in state.last_error
    os.unlink(path)
    assert update(path, pool, state)
    assert state.as_dict() == {"path": path, "updates": 3, "failures": 1, "last_error": None}
