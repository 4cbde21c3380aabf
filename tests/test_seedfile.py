"""prngd.seedfile against a fake pool: format, trust checks, atomic replacement, disk faults."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prngd import seedfile
from prngd.seedfile import SeedFormatError, SeedState, encode, load_and_replace, parse, save


class FakePool:
    """Records what is mixed and credited; output is a counter so tests can tell reads apart."""

    def __init__(self, seeded: bool = True):
        self.seeded = seeded
        self.adds: list[tuple[str, bytes, float]] = []
        self.credited = 0
        self.reads = 0
        self.reseeds = 0

    def reseed(self) -> None:
        self.reseeds += 1

    def add(self, source: str, data: bytes, bits: float) -> None:
        self.adds.append((source, bytes(data), bits))
        self.credited += int(max(0, min(bits, 8 * len(data))))

    def read(self, n: int, *, allow_unseeded: bool = False) -> bytes:
        if not self.seeded and not allow_unseeded:
            raise RuntimeError("NotSeeded")
        self.reads += 1
        return (self.reads.to_bytes(8, "big") * (n // 8 + 1))[:n]

    def mixed(self) -> list[bytes]:
        return [d for _, d, _ in self.adds]


def seed_records(caplog):
    return [r for r in caplog.records if r.name == "prngd.seedfile"]


def make_seed(path, payload=b"\xa5" * 512, credit=True, mode=0o600):
    path.write_bytes(encode(payload, credit))
    os.chmod(path, mode)
    return payload


def temps(directory):
    return [n for n in os.listdir(directory) if n.endswith(".tmp")]


# ---------------------------------------------------------------- format

def test_layout():
    data = encode(b"x" * 512, True)
    assert len(data) == seedfile.HEADER_SIZE + 512 == 556
    assert data[:8] == b"PRNGSEED" and data[8] == 1 and data[9] == 1
    assert data[10:12] == (512).to_bytes(2, "big")
    assert parse(data) == seedfile.Seed(b"x" * 512, True)
    assert parse(encode(b"y", False)).credit is False


@given(st.binary(min_size=1, max_size=seedfile.MAX_PAYLOAD), st.booleans())
def test_round_trip(payload, credit):
    assert parse(encode(payload, credit)) == seedfile.Seed(payload, credit)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=600), st.booleans(), st.data())
def test_any_damage_is_detected(payload, credit, data):
    good = encode(payload, credit)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        bit = data.draw(st.integers(0, 7))
        bad = good[:i] + bytes([good[i] ^ (1 << bit)]) + good[i + 1:]
    elif kind == "truncate":
        bad = good[:data.draw(st.integers(0, len(good) - 1))]
    else:
        bad = good + data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(SeedFormatError):
        parse(bad)


@given(st.binary(max_size=200))
def test_garbage_never_parses(junk):
    with pytest.raises(SeedFormatError):
        parse(junk)


def test_encode_bounds():
    with pytest.raises(ValueError):
        encode(b"", True)
    with pytest.raises(ValueError):
        encode(b"x" * (seedfile.MAX_PAYLOAD + 1), True)


# ---------------------------------------------------------------- load_and_replace

def test_load_credits_own_seed_and_replaces_it(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, "prngd.seedfile")
    path = tmp_path / "seed"
    payload = make_seed(path)
    before = path.read_bytes()
    pool = FakePool()
    state = load_and_replace(str(path), pool)
    assert state.loaded and state.loaded_bytes == len(before)
    assert state.credited_bits == 256 and pool.credited == 256
    assert before in pool.mixed() and payload in pool.mixed()
    # replaced on disk by fresh pool output, creditable, mode 0600, no temp files left
    after = path.read_bytes()
    assert after != before
    new = parse(after)
    assert new.credit and len(new.payload) == seedfile.SEED_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert temps(tmp_path) == []
    assert state.saves == 1 and state.failures == 0 and state.last_save is not None
    assert any("loaded 556 bytes, credited 256 bits" in r.getMessage() for r in seed_records(caplog))
    json.dumps(state.as_dict())


def test_credit_is_capped_at_256_bits(tmp_path):
    path = tmp_path / "seed"
    make_seed(path, payload=os.urandom(4000))
    pool = FakePool()
    assert load_and_replace(str(path), pool).credited_bits == 256 and pool.credited == 256


def test_small_seed_credits_its_size(tmp_path):
    path = tmp_path / "seed"
    make_seed(path, payload=b"z" * 16)
    assert load_and_replace(str(path), FakePool()).credited_bits == 128


def test_context_mixed_so_copies_diverge(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_seed(a)
    shutil.copy(a, b)
    pa, pb = FakePool(), FakePool()
    load_and_replace(str(a), pa)
    load_and_replace(str(b), pb)
    # the first thing mixed is pid/time/nonce, different every call
    assert pa.adds[0][0] == "seedfile" and pa.adds[0][1] != pb.adds[0][1]
    assert len(pa.adds[0][1]) >= 32 + 24


def test_uncredited_writer_is_mixed_not_credited(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    make_seed(path, credit=False)
    raw = path.read_bytes()
    pool = FakePool(seeded=False)
    state = load_and_replace(str(path), pool)
    assert raw in pool.mixed() and pool.credited == 0 and state.credited_bits == 0
    assert "not seeded" in state.note
    assert parse(path.read_bytes()).credit is False  # an unseeded pool writes no-credit


def test_group_readable_seed_is_mixed_not_credited_with_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    make_seed(path, mode=0o640)
    raw = path.read_bytes()
    pool = FakePool()
    state = load_and_replace(str(path), pool)
    assert raw in pool.mixed()
    assert pool.credited == 0 and state.credited_bits == 0
    warnings = [r for r in seed_records(caplog) if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "0640" in warnings[0].getMessage() and "not credited" in warnings[0].getMessage()
    # the replacement has the right mode again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o604, 0o602, 0o660, 0o606])
def test_any_group_or_other_bit_blocks_credit(tmp_path, mode):
    path = tmp_path / "seed"
    make_seed(path, mode=mode)
    assert load_and_replace(str(path), FakePool()).credited_bits == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_foreign_owner_is_mixed_not_credited(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    make_seed(path)
    os.chown(path, 65534, 65534)
    pool = FakePool()
    state = load_and_replace(str(path), pool)
    assert state.loaded and state.credited_bits == 0 and pool.credited == 0
    assert "owned by uid 65534" in state.note
    assert any(r.levelno == logging.WARNING for r in seed_records(caplog))


def test_symlink_is_refused_and_target_untouched(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    target = tmp_path / "elsewhere"
    make_seed(target)
    target_bytes = target.read_bytes()
    path = tmp_path / "seed"
    path.symlink_to(target)
    pool = FakePool()
    state = load_and_replace(str(path), pool)
    assert not state.loaded and state.credited_bits == 0 and pool.credited == 0
    assert target_bytes not in pool.mixed()
    assert target.read_bytes() == target_bytes  # never written through
    assert any(r.levelno == logging.ERROR and "symbolic link" in r.getMessage() for r in seed_records(caplog))
    # our own private directory: the link itself was replaced by a regular seed file
    assert not path.is_symlink() and parse(path.read_bytes())


def test_symlink_in_shared_directory_is_left_alone(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    target = tmp_path / "elsewhere"
    make_seed(target)
    target_bytes = target.read_bytes()
    path = shared / "seed"
    path.symlink_to(target)
    state = load_and_replace(str(path), FakePool())
    assert path.is_symlink() and target.read_bytes() == target_bytes
    assert state.saves == 0 and state.failures == 1 and "symbolic link" in state.last_error
    assert temps(shared) == []


@pytest.mark.parametrize("content", [b"", b"PRNGSEED", None])
def test_missing_short_or_corrupt(tmp_path, caplog, content):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    if content is not None:
        path.write_bytes(content)
        os.chmod(path, 0o600)
    pool = FakePool()
    state = load_and_replace(str(path), pool)
    assert state.credited_bits == 0 and pool.credited == 0
    assert state.loaded == (content is not None)
    assert any(r.levelno == logging.WARNING for r in seed_records(caplog))
    assert parse(path.read_bytes())  # replaced by a valid seed


def test_corrupt_seed_mixed_uncredited(tmp_path):
    path = tmp_path / "seed"
    make_seed(path)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    pool = FakePool()
    state = load_and_replace(str(path), pool)
    assert bytes(raw) in pool.mixed() and pool.credited == 0 and "checksum" in state.note


def test_oversized_file_read_bounded(tmp_path):
    path = tmp_path / "seed"
    path.write_bytes(b"q" * 100_000)
    os.chmod(path, 0o600)
    pool = FakePool()
    state = load_and_replace(str(path), pool)
    assert state.loaded_bytes == seedfile.MAX_FILE_SIZE and pool.credited == 0
    assert max(len(d) for d in pool.mixed()) <= seedfile.MAX_FILE_SIZE


def test_fifo_is_not_read(tmp_path):
    path = tmp_path / "seed"
    os.mkfifo(path, 0o600)
    state = load_and_replace(str(path), FakePool())  # must not hang
    assert not state.loaded and "not a regular file" in state.note


def test_missing_directory_is_created_0700(tmp_path):
    path = tmp_path / "a" / "b" / "seed"
    state = load_and_replace(str(path), FakePool())
    assert state.saves == 1 and parse(path.read_bytes())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_stale_temp_files_are_removed(tmp_path):
    path = tmp_path / "seed"
    make_seed(path)
    # a temp file from a prngd that died mid-save (pid 2**22+1 is above pid_max's default)
    stale = tmp_path / f".seed.{2 ** 22 + 1}.deadbeef.tmp"
    stale.write_bytes(b"secret")
    other = tmp_path / ".other.1.deadbeef.tmp"
    other.write_bytes(b"not ours")
    load_and_replace(str(path), FakePool())
    assert not stale.exists() and other.exists()


def test_credit_withheld_when_old_seed_cannot_be_replaced(tmp_path, monkeypatch, caplog):
    """A seed that stays on disk could be loaded again: it must not be credited this time."""
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    make_seed(path)
    before = path.read_bytes()

    def no_rename(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", dst)

    monkeypatch.setattr(seedfile.os, "rename", no_rename)
    pool = FakePool()
    state = load_and_replace(str(path), pool)
    assert before in pool.mixed() and pool.credited == 0 and state.credited_bits == 0
    assert "could not be replaced" in state.note
    assert path.read_bytes() == before and temps(tmp_path) == []
    errors = [r for r in seed_records(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Read-only file system" in errors[0].getMessage()


# ---------------------------------------------------------------- save

def test_save_credit_flag_follows_pool(tmp_path):
    path = tmp_path / "seed"
    state = SeedState(path=str(path))
    pool = FakePool(seeded=False)
    assert save(str(path), pool, state)
    assert parse(path.read_bytes()).credit is False and state.last_save_credit is False
    pool.seeded = True
    first = path.read_bytes()
    assert save(str(path), pool, state)
    assert parse(path.read_bytes()).credit is True and path.read_bytes() != first
    assert state.saves == 2 and state.failures == 0 and state.last_error is None


@pytest.mark.parametrize("where,err", [
    ("open", errno.EROFS),  # read-only directory / file system
    ("write", errno.ENOSPC),  # full disk
    ("fsync", errno.EIO),  # I/O error
    ("rename", errno.EIO),
])
def test_disk_faults_logged_once_per_attempt(tmp_path, monkeypatch, caplog, where, err):
    caplog.set_level(logging.DEBUG, "prngd.seedfile")
    path = tmp_path / "seed"
    make_seed(path)
    before = path.read_bytes()
    real = getattr(os, where)

    def failing(*args, **kwargs):
        if where == "open" and not (args[1] & os.O_CREAT):
            return real(*args, **kwargs)  # only creating the temp file fails
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(seedfile.os, where, failing)
    state = SeedState(path=str(path))
    for attempt in (1, 2, 3):
        assert save(str(path), FakePool(), state) is False
        errors = [r for r in seed_records(caplog) if r.levelno >= logging.WARNING]
        assert len(errors) == attempt  # exactly one line per failing attempt
        assert os.strerror(err) in errors[-1].getMessage()
    assert state.failures == 3 and state.saves == 0 and os.strerror(err) in state.last_error
    monkeypatch.undo()
    assert path.read_bytes() == before and temps(tmp_path) == []
    assert save(str(path), FakePool(), state) and state.last_error is None and state.saves == 1


def test_save_never_raises_when_directory_became_a_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    d = tmp_path / "dir"
    d.mkdir()
    path = d / "seed"
    state = load_and_replace(str(path), FakePool())
    shutil.rmtree(d)
    d.write_text("not a directory")
    assert save(str(path), FakePool(), state) is False
    assert state.failures == 1 and len([r for r in seed_records(caplog) if r.levelno == logging.ERROR]) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_read_only_directory_as_unprivileged_user():
    """Root ignores mode bits, so become `nobody` in a forked child and save into a 0500 directory."""
    base = tempfile.mkdtemp(prefix="prngd-ro-")
    try:
        os.chmod(base, 0o755)
        d = os.path.join(base, "seeds")
        os.mkdir(d)
        path = os.path.join(d, "seed")
        with open(path, "wb") as f:
            f.write(encode(b"\x11" * 512, True))
        os.chmod(path, 0o600)
        os.chown(path, 65534, 65534)
        os.chown(d, 65534, 65534)
        os.chmod(d, 0o500)
        before = open(path, "rb").read()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                logging.disable(logging.CRITICAL)
                state = SeedState(path=path)
                ok = save(path, FakePool(), state)
                loaded = load_and_replace(path, FakePool())
                os.write(w, json.dumps({"ok": ok, "state": state.as_dict(), "load": loaded.as_dict()}).encode())
                os._exit(0)
            except BaseException:
                os._exit(1)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            out = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        result = json.loads(out)
        assert result["ok"] is False
        assert result["state"]["failures"] == 1 and "Permission denied" in result["state"]["last_error"]
        # load as the owner: read, mixed, credit withheld because it could not be replaced
        assert result["load"]["loaded"] and result["load"]["credited_bits"] == 0
        assert open(path, "rb").read() == before
        assert [n for n in os.listdir(d) if n.endswith(".tmp")] == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- with the real pool

def test_with_real_pool(tmp_path):
    """A credited seed seeds a fresh pool; copies of one seed give different output."""
    pool_mod = pytest.importorskip("prngd.pool")
    a, b = tmp_path / "a", tmp_path / "b"
    make_seed(a)
    shutil.copy(a, b)
    outs = []
    for path in (a, b):
        pool = pool_mod.Pool(os_random=lambda n: bytes(n))  # no OS randomness: only seed + context
        assert not pool.seeded
        state = load_and_replace(str(path), pool)
        assert state.credited_bits == 256 and pool.seeded
        assert parse(path.read_bytes()).credit
        outs.append(pool.read(64))
    assert outs[0] != outs[1]
    # an unseeded, uncredited start still replaces the seed, marked no-credit
    pool = pool_mod.Pool(os_random=lambda n: bytes(n))
    make_seed(a, credit=False)
    load_and_replace(str(a), pool)
    assert not pool.seeded and parse(a.read_bytes()).credit is False


@pytest.mark.parametrize("kernel_ready", [True, False])
def test_the_new_seed_depends_on_the_old_one(tmp_path, monkeypatch, kernel_ready):
    """seedrng's chain: the replacement is drawn after the old seed reached the key.

    Same start-up randomness, same context, different old seeds: the files written
    in their place must differ, whether or not the kernel seeded the pool first.
    """
    from prngd.pool import Pool

    monkeypatch.setattr(seedfile, "_context", lambda: b"fixed context")
    written = []
    for payload in (b"\x01" * 512, b"\x02" * 512):
        d = tmp_path / payload[:1].hex()
        d.mkdir()
        make_seed(d / "seed", payload=payload)
        pool = Pool(os_random=lambda n: b"\x07" * n, clock=lambda: 0.0)
        if kernel_ready:
            pool.add("kernel", b"\x09" * 32, 256)
        load_and_replace(str(d / "seed"), pool)
        written.append(parse((d / "seed").read_bytes()).payload)
    assert written[0] != written[1]
