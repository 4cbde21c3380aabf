"""prngd.seedfile against a fake pool: format, trust checks, atomic replacement, disk faults."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import sys
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prngd import seedfile
from prngd.identity import Identity
from prngd.seedfile import ForeignFile, SeedFormatError, SeedState, encode, load_and_replace, parse, save

# This machine and another one, as identity.py would fingerprint them.
HERE = Identity(b"\x11" * 32, ("machine-id",))
ELSEWHERE = Identity(b"\x22" * 32, ("machine-id",))


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


def make_seed(path, payload=b"\xa5" * 512, credit=True, mode=0o600, machine=HERE):
    path.write_bytes(encode(payload, credit, machine.fingerprint))
    os.chmod(path, mode)
    return payload


def load(path, pool, machine=HERE):
    return load_and_replace(str(path), pool, machine)


def temps(directory):
    return [n for n in os.listdir(directory) if n.endswith(".tmp")]


# ---------------------------------------------------------------- format

def test_layout():
    data = encode(b"x" * 512, True, HERE.fingerprint)
    assert len(data) == seedfile.HEADER_SIZE + 512 == 588
    assert data[:8] == b"PRNGSEED" and data[8] == 2 and data[9] == 0x03
    assert data[10:12] == (512).to_bytes(2, "big")
    assert data[12:44] == HERE.fingerprint
    assert parse(data) == seedfile.Seed(b"x" * 512, True, 2, HERE.fingerprint)
    unbound = encode(b"y", False)
    assert unbound[9] == 0 and unbound[12:44] == bytes(32)
    assert parse(unbound).credit is False and parse(unbound).fingerprint is None


def test_unbound_seed_must_have_a_zero_fingerprint_field():
    head = seedfile._HEAD.pack(b"PRNGSEED", 2, 0x01, 1) + b"\x11" * 32
    with pytest.raises(SeedFormatError, match="fingerprint"):
        parse(head + seedfile._checksum(head, b"x") + b"x")


def test_version_1_still_parses():
    data = seedfile.encode_v1(b"x" * 512, True)
    assert len(data) == 556 and data[8] == 1
    assert parse(data) == seedfile.Seed(b"x" * 512, True, 1, None)


@given(st.binary(min_size=1, max_size=seedfile.MAX_PAYLOAD), st.booleans(),
       st.one_of(st.none(), st.binary(min_size=32, max_size=32)))
def test_round_trip(payload, credit, fingerprint):
    assert parse(encode(payload, credit, fingerprint)) == seedfile.Seed(payload, credit, 2, fingerprint)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=600), st.booleans(), st.data())
def test_any_damage_is_detected(payload, credit, data):
    good = encode(payload, credit, data.draw(st.sampled_from([None, HERE.fingerprint])))
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
    with pytest.raises(ValueError):
        encode(b"x", True, b"short")


# ---------------------------------------------------------------- load_and_replace

def test_load_credits_own_seed_and_replaces_it(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, "prngd.seedfile")
    path = tmp_path / "seed"
    payload = make_seed(path)
    before = path.read_bytes()
    pool = FakePool()
    state = load(path, pool)
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
    assert any("loaded 588 bytes, credited 256 bits" in r.getMessage() for r in seed_records(caplog))
    assert state.origin == "this machine" and state.note is None
    assert new.fingerprint == HERE.fingerprint
    report = state.as_dict()
    assert "fingerprint" not in report  # the status shows where a seed came from, never the fingerprint
    json.dumps(report)


def test_credit_is_capped_at_256_bits(tmp_path):
    path = tmp_path / "seed"
    make_seed(path, payload=os.urandom(4000))
    pool = FakePool()
    assert load(path, pool).credited_bits == 256 and pool.credited == 256


def test_small_seed_credits_its_size(tmp_path):
    path = tmp_path / "seed"
    make_seed(path, payload=b"z" * 16)
    assert load(path, FakePool()).credited_bits == 128


def test_context_mixed_so_copies_diverge(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_seed(a)
    shutil.copy(a, b)
    pa, pb = FakePool(), FakePool()
    load(a, pa)
    load(b, pb)
    # the first thing mixed is pid/time/nonce, different every call
    assert pa.adds[0][0] == "seedfile" and pa.adds[0][1] != pb.adds[0][1]
    assert len(pa.adds[0][1]) >= 32 + 24


def test_uncredited_writer_is_mixed_not_credited(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    make_seed(path, credit=False)
    raw = path.read_bytes()
    pool = FakePool(seeded=False)
    state = load(path, pool)
    assert raw in pool.mixed() and pool.credited == 0 and state.credited_bits == 0
    assert "not seeded" in state.note
    assert parse(path.read_bytes()).credit is False  # an unseeded pool writes no-credit


def test_group_readable_seed_is_mixed_not_credited_with_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    make_seed(path, mode=0o640)
    raw = path.read_bytes()
    pool = FakePool()
    state = load(path, pool)
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
    assert load(path, FakePool()).credited_bits == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_foreign_owner_is_mixed_not_credited(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    make_seed(path)
    os.chown(path, 65534, 65534)
    pool = FakePool()
    state = load(path, pool)
    assert state.loaded and state.credited_bits == 0 and pool.credited == 0
    assert "owned by uid 65534" in state.note
    assert any(r.levelno == logging.WARNING for r in seed_records(caplog))


def seed_symlink(path, target):
    """A symbolic link at `path` to a valid seed file at `target`: (path, target, target's bytes)."""
    make_seed(target)
    path.symlink_to(target)
    return path, target, target.read_bytes()


def test_symlink_at_start_is_foreign_and_nothing_is_touched(tmp_path):
    path, target, target_bytes = seed_symlink(tmp_path / "seed", tmp_path / "elsewhere")
    pool = FakePool()
    with pytest.raises(ForeignFile, match="symbolic link"):
        load(path, pool)
    assert pool.adds == [] and pool.reads == 0
    assert path.is_symlink() and target.read_bytes() == target_bytes
    assert temps(tmp_path) == []


@pytest.mark.parametrize("mode", [0o700, 0o1777])
def test_symlink_appearing_later_is_left_alone(tmp_path, caplog, mode):
    """In a private directory as in a shared one: a link prngd did not make is neither followed nor replaced."""
    caplog.set_level(logging.INFO, "prngd.seedfile")
    directory = tmp_path / "seeds"
    directory.mkdir()
    os.chmod(directory, mode)
    path, target, target_bytes = seed_symlink(directory / "seed", tmp_path / "elsewhere")
    state = SeedState(path=str(path), fingerprint=HERE.fingerprint)
    assert save(str(path), FakePool(), state) is False
    assert path.is_symlink() and target.read_bytes() == target_bytes
    assert state.saves == 0 and state.failures == 1 and "symbolic link" in state.last_error
    assert temps(directory) == []
    errors = [r for r in seed_records(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "left in place" in errors[0].getMessage()



def test_a_parsed_seed_is_a_value():
    """Equal and hashed by its fields, immutable: what parse's tests compare."""
    a = seedfile.Seed(b"x" * 32, True, 2, HERE.fingerprint)
    b = seedfile.Seed(payload=b"x" * 32, credit=True, fingerprint=HERE.fingerprint)  # version 2 by default
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != seedfile.Seed(b"x" * 32, True, 2, None) and a != seedfile.Seed(b"x" * 32, False, 2, HERE.fingerprint)
    with pytest.raises(AttributeError):
        a.credit = False
    with pytest.raises(AttributeError):
        del a.payload
    assert a.credit is True and "credit=True" in repr(a)


def test_seed_state_reports_everything_but_the_fingerprint():
    state = SeedState(path="/s", fingerprint=HERE.fingerprint, origin=seedfile.ORIGIN_THIS_MACHINE)
    state.saves += 1
    assert state.as_dict() == {"path": "/s", "loaded": False, "loaded_bytes": 0, "credited_bits": 0, "note": None,
                               "origin": "this machine", "last_save": None, "last_save_credit": None, "saves": 1,
                               "failures": 0, "last_error": None}
    assert list(state.as_dict())[:3] == ["path", "loaded", "loaded_bytes"]  # the status JSON's order
    assert HERE.fingerprint.hex() not in repr(state) and repr(HERE.fingerprint) not in repr(state)
    json.dumps(state.as_dict())

@pytest.mark.parametrize("content,note", [
    (None, "no seed file yet"),
    (b"", "the file was empty"),
])
def test_nothing_to_lose_is_info_and_replaced(tmp_path, caplog, content, note):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    if content is not None:
        path.write_bytes(content)
        os.chmod(path, 0o600)
    pool = FakePool()
    state = load(path, pool)
    assert state.credited_bits == 0 and pool.credited == 0 and state.note == note
    records = seed_records(caplog)
    assert len(records) == 1 and records[0].levelno == logging.INFO and note in records[0].getMessage()
    assert parse(path.read_bytes()).fingerprint == HERE.fingerprint  # replaced by a valid seed


@pytest.mark.parametrize("content", [b"PRNGSEED", b"PRNG", b"PRNGSEED" + bytes(200)])
def test_damaged_seed_of_ours_is_mixed_and_replaced(tmp_path, caplog, content):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    pool = FakePool()
    state = load(path, pool)
    assert state.loaded and content in pool.mixed() and pool.credited == 0
    assert any(r.levelno == logging.WARNING for r in seed_records(caplog))
    assert parse(path.read_bytes())


def test_corrupt_seed_mixed_uncredited(tmp_path):
    path = tmp_path / "seed"
    make_seed(path)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    pool = FakePool()
    state = load(path, pool)
    assert bytes(raw) in pool.mixed() and pool.credited == 0 and "checksum" in state.note


def _foreign_things(tmp_path):
    """name -> a function making that thing at a path; each must be refused and left as it was."""
    def text(p):
        p.write_text("my notes\n" * 50)

    def text_4096(p):  # PRNGD's size, but text
        p.write_bytes((b"The quick brown fox jumps over the lazy dog. " * 100)[:4096])

    def data(p):
        p.write_bytes(os.urandom(1000))

    def zeros_4096(p):
        p.write_bytes(bytes(4096))

    def oversized(p):
        p.write_bytes(os.urandom(seedfile.MAX_FILE_SIZE + 1))

    def fifo(p):
        os.mkfifo(p, 0o600)

    def directory(p):
        p.mkdir()
        (p / "inside").write_text("keep me")

    def device(p):
        os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers

    def dangling_link(p):
        p.symlink_to(tmp_path / "nowhere")

    things = dict(text=text, text_4096=text_4096, data=data, zeros_4096=zeros_4096, oversized=oversized,
                  fifo=fifo, directory=directory, dangling_link=dangling_link)
    if os.geteuid() == 0:
        things["device"] = device
    return things


def _snapshot(p):
    st = os.lstat(p)
    if stat.S_ISREG(st.st_mode):
        return ("file", p.read_bytes(), st.st_mode, st.st_mtime_ns)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", sorted(os.listdir(p)), st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(p))
    return ("other", st.st_mode, st.st_rdev, st.st_ino)


@pytest.mark.parametrize("kind", ["text", "text_4096", "data", "zeros_4096", "oversized", "fifo", "directory",
                                  "device", "dangling_link"])
def test_foreign_things_are_refused_before_anything_is_written(tmp_path, kind):
    things = _foreign_things(tmp_path)
    if kind not in things:
        pytest.skip("needs root for mknod")
    path = tmp_path / "seed"
    things[kind](path)
    before = _snapshot(path)
    pool = FakePool()
    with pytest.raises(ForeignFile) as info:
        load(path, pool)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "untouched" in message
    assert pool.adds == [] and pool.reads == 0  # nothing mixed, nothing drawn, nothing written
    assert _snapshot(path) == before
    assert temps(tmp_path) == []


def test_foreign_messages_say_what_is_there(tmp_path):
    things = _foreign_things(tmp_path)
    expected = {"text": "a text file", "data": "data of 1000 bytes", "oversized": "4097 bytes", "fifo": "a FIFO",
                "directory": "a directory", "device": "a character device", "dangling_link": "symbolic link"}
    for kind, words in expected.items():
        if kind not in things:
            continue
        path = tmp_path / f"seed-{kind}"
        things[kind](path)
        with pytest.raises(ForeignFile, match=words):
            load(path, FakePool())


# ---------------------------------------------------------------- where the seed came from

def test_seed_from_another_machine_is_mixed_not_credited_then_ours_is(tmp_path, caplog):
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "seed"
    payload = make_seed(path, machine=ELSEWHERE)
    raw = path.read_bytes()
    pool = FakePool()
    state = load(path, pool)  # on HERE: a clone of ELSEWHERE's disk
    assert raw in pool.mixed() and payload in raw
    assert state.loaded and state.credited_bits == 0 and pool.credited == 0
    assert state.origin == "another machine" and "another machine" in state.note
    records = seed_records(caplog)
    assert len(records) == 1 and "not credited" in records[0].getMessage() and "another machine" in records[0].getMessage()
    # replaced at once, bound to this machine, creditable: the next start credits it
    new = parse(path.read_bytes())
    assert new.fingerprint == HERE.fingerprint and new.credit
    again = load(path, FakePool())
    assert again.credited_bits == 256 and again.origin == "this machine" and again.note is None


def test_older_prngd_seed_is_mixed_once_not_credited(tmp_path):
    path = tmp_path / "seed"
    path.write_bytes(seedfile.encode_v1(b"\x5a" * 512, True))
    os.chmod(path, 0o600)
    raw = path.read_bytes()
    pool = FakePool()
    state = load(path, pool)
    assert raw in pool.mixed() and state.credited_bits == 0 and state.origin == "older prngd"
    assert "older prngd" in state.note
    new = parse(path.read_bytes())
    assert new.version == 2 and new.fingerprint == HERE.fingerprint
    assert load(path, FakePool()).credited_bits == 256


def test_prngd_legacy_seed_is_migrated(tmp_path, caplog):
    """PRNGD writes 4096 bytes of its generator's output and nothing else: `-s /etc/prngd-seed` migrates."""
    caplog.set_level(logging.INFO, "prngd.seedfile")
    path = tmp_path / "prngd-seed"
    legacy = os.urandom(seedfile.PRNGD_SEED_SIZE)
    path.write_bytes(legacy)
    os.chmod(path, 0o600)
    pool = FakePool()
    state = load(path, pool)
    assert legacy in pool.mixed() and state.credited_bits == 0 and pool.credited == 0
    assert state.origin == "PRNGD" and "PRNGD" in state.note
    assert [r.levelno for r in seed_records(caplog)] == [logging.INFO]
    assert parse(path.read_bytes()).fingerprint == HERE.fingerprint


def test_unbound_seed_is_not_credited(tmp_path):
    path = tmp_path / "seed"
    make_seed(path, machine=Identity(None))
    state = load(path, FakePool())
    assert state.credited_bits == 0 and state.origin == "no machine fingerprint"


def test_machine_without_identity_never_credits(tmp_path):
    nobody = Identity(None)
    path = tmp_path / "seed"
    make_seed(path)
    state = load(path, FakePool(), nobody)
    assert state.credited_bits == 0 and "nothing identifies this machine" in state.note
    assert parse(path.read_bytes()).fingerprint is None  # written unbound
    assert load(path, FakePool(), nobody).credited_bits == 0


def test_trust_problem_wins_over_origin(tmp_path):
    path = tmp_path / "seed"
    make_seed(path, mode=0o644)
    state = load(path, FakePool())
    assert state.credited_bits == 0 and "0644" in state.note and state.origin == "this machine"


def test_prngd_seed_recognition_takes_random_output_only():
    assert all(seedfile.looks_like_prngd_seed(os.urandom(4096)) for _ in range(1000))
    with open(sys.executable, "rb") as f:
        binary = f.read(4096)
    structured = {
        "short random": os.urandom(4095),
        "long random": os.urandom(4097),
        "every byte value 16 times": bytes(range(256)) * 16,
        "text": (b"Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 80)[:4096],
        "zeros": bytes(4096),
        "an executable": binary,
        "random with a repeated half": os.urandom(2048) * 2,
    }
    for name, data in structured.items():
        assert not seedfile.looks_like_prngd_seed(data), name


def test_missing_directory_is_created_0700(tmp_path):
    path = tmp_path / "a" / "b" / "seed"
    state = load(path, FakePool())
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
    load(path, FakePool())
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
    state = load(path, pool)
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
    state = load(path, FakePool())
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
            f.write(encode(b"\x11" * 512, True, HERE.fingerprint))
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
                loaded = load_and_replace(path, FakePool(), HERE)
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
        state = load(path, pool)
        assert state.credited_bits == 256 and pool.seeded
        assert parse(path.read_bytes()).credit
        outs.append(pool.read(64))
    assert outs[0] != outs[1]
    # an unseeded, uncredited start still replaces the seed, marked no-credit
    pool = pool_mod.Pool(os_random=lambda n: bytes(n))
    make_seed(a, credit=False)
    load(a, pool)
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
        load(d / "seed", pool)
        written.append(parse((d / "seed").read_bytes()).payload)
    assert written[0] != written[1]
